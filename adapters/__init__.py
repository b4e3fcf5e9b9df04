"""Platform adapters. Each turns platform events into ``bot.types.Inbound`` and
renders ``bot.types.Reply`` streams; SDK types never leave its own module."""
