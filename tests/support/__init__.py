"""What the tests share: one fake renderer, a step gate that holds renders, one `eventually()`, the bot harness.

Nothing here is a test; test modules import from here, never from conftest or from each other.
"""
