"""One module per kind of job (still, video, upscale) and what they share: the frame loop, the
checks made before any model loads, job checkpoints (resume), metadata, image files, timelapses."""
