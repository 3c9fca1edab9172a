"""Names of the scoring engines an attack can ask for (light: no model code)."""

#: Evaluator kinds for attacks: ``incremental`` recomputes only what one pixel changes (Keras
#: and built-in models), ``full`` runs the whole network per candidate, ``auto`` picks
#: (:func:`onepixel.scoring.policy.evaluator_for`).
EVALUATORS = ("auto", "incremental", "full")
#: Candidates per incremental pass on CPU: big enough for fast convolutions, small enough to
#: stay in cache (bench/results/attack-cpu.md).
INCREMENTAL_CPU_BATCH = 256
