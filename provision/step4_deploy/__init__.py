"""Step 4: automate deployment (releases switched atomically, old ones pruned, all by recipe)."""

STEP = 4
TITLE = "Automate deployment"
ANSWERS = "releases are deployed by Fabric: `fab -H {web1} status`, `lab deploy`, `lab rollback`"
