"""Discord's JSON error codes that change what the delivery does (docs/discord.md, "Errors")."""

UNKNOWN_CHANNEL = 10003  # the channel was deleted
UNKNOWN_MESSAGE = 10008  # the message was deleted
TOO_MANY_OLD_EDITS = 30046  # sent as a 429: edits to a message older than an hour are used up
ENTITY_TOO_LARGE = 40005  # the upload is over the real limit (a 413)
MISSING_ACCESS = 50001  # the bot cannot see the channel
MISSING_PERMISSIONS = 50013  # the bot may not send, attach or edit there
ARCHIVED_THREAD = 50083  # the thread is archived

# never repeated: each refusal counts towards Discord's ban (docs/discord.md, "The invalid-request ban")
NO_ACCESS = (UNKNOWN_CHANNEL, MISSING_ACCESS, MISSING_PERMISSIONS)
