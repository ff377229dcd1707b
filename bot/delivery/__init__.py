"""The channel side of a job: its status message (paced edits) and its result message, posted with the bot token."""
