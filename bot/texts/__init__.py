"""Blocks of the texts catalog (``bot.messages``): English blocks of areas
with many texts, merged into ``CATALOG["en"]``, and each shipped language's
translations in its own module."""
