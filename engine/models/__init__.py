"""The networks and their files: the registry, downloads, safe loading, the VQGAN, the tiny preset,
the speed-ups applied after loading, Real-ESRGAN, and the cache a renderer keeps them in."""
