"""The render queue: its interfaces, the queue itself, the runner, the fair-share scheduler and admission control.

Nothing here imports discord or torch: the Discord side and the engine meet this package only through
the Protocols in `bot.queue.api`.
"""
