"""Rewrites: frozen specs -> frozen Plan -> run(plan, target) -> what changed.

spec.py (CastSpec, StripSpec, MoveSpec, ConvertSpec, Target) -> plan.py (load, plan -> Plan) ->
run.py (run -> result.RewriteResult); rename.py renames model keys (Renames, with_renames),
destination.py resolves where and in which layout a plan is written, hf.py writes Hugging Face
folders, tree.py rebuilds the saved object, encode.py drives the formats' encoders, stream.py moves
and casts bytes, verify.py re-reads what was written.
"""
