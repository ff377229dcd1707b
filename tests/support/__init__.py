"""What the tests share. Nothing here is a test; test modules import from here, never from conftest or each other.

- `fake_discord`, `fake_payloads`: a fake Discord on 127.0.0.1 (REST, gateway, CDN) for the real discord.py client
- `bot_harness`: the bot built by `bot.services.build_services` in the test's loop, with the fake renderer
- `bot_process`, `gated_bot`: `python -m bot` as a subprocess, its renders held by a folder gate
- `queue_worker`: a bot-less worker process (queue and runner) for the crash tests
- `renderer`: the one fake renderer; `gate`: step gates that hold renders between iterations
- `events`: a queue subscriber that records what it is told; `waiting`: the one `eventually()`
- `speed`: the render-speed switch; `images`, `mediafiles`, `specs`, `files`: small inputs and file reads
"""
