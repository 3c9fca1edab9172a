"""Names of the scoring engines an attack can ask for (light: no model code)."""

#: Evaluator kinds for attacks: ``incremental`` recomputes only what one pixel changes (Keras
#: and built-in models), ``full`` runs the whole network per candidate, ``auto`` picks
#: (:func:`onepixel.scoring.policy.evaluator_for`).
EVALUATORS = ("auto", "incremental", "full")
#: Candidates per incremental pass on CPU: big enough for fast convolutions, small enough to
#: stay in cache (bench/results/attack-cpu.md).
INCREMENTAL_CPU_BATCH = 256
#: Images attacked at once by default (``batch_images=None``): all of a small dataset, at most
#: this many on CPU (a call of 256 candidates keeps the incremental evaluator in cache) and on
#: CUDA (where bigger calls cost little more).
AUTO_BATCH_IMAGES = {"cpu": 256, "cuda": 2048}
