"""The bank app: banks, accounts and transfers, plus the pages that show them."""
