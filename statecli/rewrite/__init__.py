"""Rewrites: frozen specs -> frozen Plan -> run(plan, target) -> what changed."""
