"""Step 4: automate deployment (releases switched atomically, old ones pruned, all by recipe)."""

STEP = 4
TITLE = "Automate deployment"
