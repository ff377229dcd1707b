"""`python -m engine`: one module per subcommand (image; video and style; upscale), `main` in `engine.cli.main`."""
