"""Pure analyses over classified checkpoints: each returns a frozen result (exit_code, to_dict, rows)."""
