"""billing: the credit ledger. Reserve before dispatch, settle from the engine's counts, release."""
