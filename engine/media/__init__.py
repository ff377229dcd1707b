"""Media files without torch: the one place that runs ffmpeg, probing user media, the seed's video
tools, and shrinking results under a byte budget. The bot imports these to check and fit files."""
