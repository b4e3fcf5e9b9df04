"""English texts of the larger areas, by key; ``bot.messages`` merges them into its catalog."""
