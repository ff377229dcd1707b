"""The optimisation of one job's latent: its state and step, quantisation, losses, cutouts,
optimizers, the video smoother and the job's random streams (docs/engine.md, "The algorithm")."""
