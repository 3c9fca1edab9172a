"""Batched random search for k-pixel attacks (Sparse-RS style), on arrays, no models.

Each problem (one image) keeps its best candidate: ``k`` pixel groups ``(x, y, c_1..c_C)`` of
integers. Every step proposes ``RSConfig.candidates`` new candidates per live problem, all
problems' candidates go to the objective in one call, and a problem keeps the best of its
proposals when it beats its best (successful first, then the lower energy). Proposals:

- **global** (Sparse-RS's move): ``m`` of the ``k`` groups re-drawn at a new position with a
  colour at a corner of the colour cube (every channel 0 or 255); ``m`` falls from ``k / 2`` to
  1 as the budget is spent (Sparse-RS's schedule, halving). Position and corner come from the
  mixture ``w * prior + (1 - w) * uniform`` (:class:`CampaignPrior`), never the prior alone;
- **local**: one group moved to a position within ``r`` of the best (``r`` shrinking from an
  eighth of the image to 1 over the first :data:`LOCAL_SCHEDULE` queries) with the best's
  colour or a random corner;
- **refine**: one channel of one group set to a random value or to the best's value plus or
  minus a power of two, or the group nudged to a neighbouring pixel (coordinate search at
  integer resolution, so the search ends near where DE would and not just across the line).

Before the goal is met most proposals are global (70 %, local 20 %, refine 10 %); once it is met
(without ``stop_on_success``) most refine (60 %, local 30 %, global 10 %). In ``labels_only``
mode the objective gives no score, so every proposal is global and a problem stops at its first
success.

**Pattern search.** From the first success (or after :data:`PATTERN_AFTER` queries without one,
then on :data:`PATTERN_SHARE_BEFORE` of each step's slots) the first slots of a step hold a
deterministic local search around a centre (the best so far): each channel of one group plus
and minus a step, the group at its 8 neighbours at 1 or 2 pixels (in turn: strided CNNs often
respond to every second pixel) with the centre's colour, and two diagonal colour moves. A move
that beats the centre becomes the centre; when every move at a step failed, the step halves
(:data:`PATTERN_STEP`, ..., 1); when it converges on every group, the search restarts from the
best place queried that was not yet a centre and is not next to the best. A random proposal that
beats the centre moves the centre there. **Memo**: every candidate queried (as proposed and as
scored) is remembered per problem, and a proposal already queried (or repeated within the step)
is replaced by a fresh random one (:data:`DEDUPE_ROUNDS` draws from the mixture, then a uniform
random candidate), so no query repeats a candidate and the budget after a local optimum goes to
exploring.

Random numbers come from one generator per problem seeded by ``(seed, problem_id)``, so with the
prior off a problem's result does not depend on its batch, its executor or a resume. With the
prior on, a problem also reads what the other problems of the campaign found before it, so its
result depends on the campaign's order (it is still reproducible for the same campaign).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onepixel.errors import ConfigError, is_integer
from onepixel.optimize.de import DEResult

log = logging.getLogger(__name__)

#: ``DEResult.message`` of a random-search result.
MESSAGE_BUDGET = "query budget spent"
MESSAGE_SUCCESS = "goal met (stop on success)"

#: Queries over which the local radius shrinks from an eighth of the image to one pixel.
LOCAL_SCHEDULE = 2_000
#: Proposal mixtures (global, local, refine) before and after the goal is met.
EXPLORE_MIX = (0.7, 0.2, 0.1)
EXPLOIT_MIX = (0.1, 0.3, 0.6)
#: The search's revision, recorded in an rs RUN's config.json: raised whenever a (seed, image)
#: gives other candidates than before, so that a RUN resumes only with the search that began it
#: (2: the pattern search and the memo).
REVISION = 2
#: The pattern search starts at the first success, or after this many queries without one.
PATTERN_AFTER = 1_000
#: Its first step on a channel (then halved down to 1).
PATTERN_STEP = 128
#: Its share of a step's proposals before the goal is met (all of its moves after).
PATTERN_SHARE_BEFORE = 0.25
#: Rounds of fresh random proposals drawn to replace already-queried ones, per step.
DEDUPE_ROUNDS = 3


@dataclass(frozen=True)
class RSConfig:
    """Random-search settings.

    Attributes
    ----------
    candidates : int
        Proposals per image per step (one objective call carries them for every live image).
    prior : bool
        Sample positions and corner colours partly from the campaign prior
        (:class:`CampaignPrior`); False: uniform proposals only.
    prior_weight : float
        The prior's largest share ``w_max`` of global proposals, in [0, 0.9]; its share after
        ``n`` recorded successes is ``w_max * n / (n + 2)`` (for positions and colours drawn
        independently), and the uniform proposal keeps at least
        ``1 - w_max``.
    history_block : int
        The history records the best energy every this many queries (and at the end).
    seed : int
        Base seed; problem ``i``'s stream is derived from ``(seed, problem_ids[i])``.
    """

    candidates: int = 16
    prior: bool = True
    prior_weight: float = 0.5
    history_block: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if not is_integer(self.candidates) or not 1 <= self.candidates <= 4096:
            raise ConfigError(f"RSConfig.candidates must be an integer within 1..4096, got "
                              f"{self.candidates!r}")
        if not isinstance(self.prior, bool):
            raise ConfigError(f"RSConfig.prior must be True or False, got {self.prior!r}")
        if isinstance(self.prior_weight, bool) or not isinstance(self.prior_weight, int | float) \
                or not 0.0 <= self.prior_weight <= 0.9:
            raise ConfigError(f"RSConfig.prior_weight must be within [0, 0.9] (the uniform "
                              f"proposal always keeps a share), got {self.prior_weight!r}")
        if not is_integer(self.history_block) or self.history_block < 1:
            raise ConfigError(f"RSConfig.history_block must be an integer >= 1, got "
                              f"{self.history_block!r}")
        if not is_integer(self.seed) or self.seed < 0:
            raise ConfigError(f"RSConfig.seed must be a non-negative integer, got {self.seed!r}")


class CampaignPrior:
    """What worked so far in a campaign: the positions and corner colours of successful pixels.

    Problems add their successful best candidates as soon as they succeed (in flight), and a
    campaign adds the successful rows it resumes from. Sampling picks a recorded success at
    random and jitters its position by up to one pixel, so neighbours are tried too.

    Parameters
    ----------
    shape : (H, W, C)
    weight : float
        ``w_max`` of :class:`RSConfig` (``prior_weight``).
    """

    def __init__(self, shape: tuple[int, int, int], weight: float = 0.5):
        self.h, self.w, self.c = (int(v) for v in shape)
        self.weight = float(weight)
        self.positions: list[tuple[int, int]] = []
        self.corners: list[tuple[int, ...]] = []

    def __len__(self) -> int:
        return len(self.positions)

    def share(self) -> float:
        """The prior's share of global proposals now: ``w_max * n / (n + 2)``."""
        n = len(self.positions)
        return self.weight * n / (n + 2)

    def add(self, candidate: np.ndarray) -> None:
        """Record a successful candidate (k * (2 + C),): each group's position and nearest corner."""
        width = 2 + self.c
        for g in np.asarray(candidate, dtype=np.int64).reshape(-1, width):
            if 0 <= g[0] < self.w and 0 <= g[1] < self.h:
                self.positions.append((int(g[0]), int(g[1])))
                self.corners.append(tuple((255 if v >= 128 else 0) for v in g[2:]))

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` positions (n, 2) (x, y) and corner colours (n, C) drawn from the recorded ones."""
        pick = rng.integers(0, len(self.positions), size=n)
        pos = np.asarray(self.positions, dtype=np.int64)[pick] + rng.integers(-1, 2, size=(n, 2))
        pos[:, 0] = np.clip(pos[:, 0], 0, self.w - 1)
        pos[:, 1] = np.clip(pos[:, 1], 0, self.h - 1)
        return pos, np.asarray(self.corners, dtype=np.int64)[pick]


#: ``objective(rows (R,), candidates (R, P, D) int64) -> (energies (R, P), success (R, P) bool,
#: scored candidates (R, P, D))``: the scored candidates are the ones actually queried (a colour
#: budget repairs them), and they become the best.
Objective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


class BatchRandomSearch:
    """Random search on ``n_problems`` problems at once (see the module docstring).

    Parameters
    ----------
    objective : Objective
    shape : (H, W, C)
        Image shape: positions are within ``W x H``, values within 0..255.
    pixels : int
        ``k``, the pixel groups per candidate.
    problem_ids : ndarray, (B,) int64
        Seeds each problem's stream with ``config.seed``.
    max_queries : int
        Queries per problem.
    config : RSConfig
    stop_on_success : bool
        A problem stops when its best meets the goal (always in ``labels_only``).
    labels_only : bool
        The objective's energies carry no information beyond success: global proposals only.
    prior : CampaignPrior or None
        Shared by the problems (and across batches of a campaign); None: uniform proposals.
    """

    def __init__(self, objective: Objective, shape: tuple[int, int, int], pixels: int,
                 problem_ids: np.ndarray, max_queries: int, config: RSConfig | None = None,
                 stop_on_success: bool = False, labels_only: bool = False,
                 prior: CampaignPrior | None = None):
        self.objective = objective
        self.h, self.w, self.c = (int(v) for v in shape)
        self.k = int(pixels)
        self.width = 2 + self.c
        self.config = config or RSConfig()
        self.max_queries = int(max_queries)
        self.stop_on_success = bool(stop_on_success or labels_only)
        self.labels_only = bool(labels_only)
        self.prior = prior
        ids = np.asarray(problem_ids, dtype=np.int64)
        n = len(ids)
        self.ids = ids
        self.rngs = [np.random.default_rng([self.config.seed, int(i)]) for i in ids]
        self.best_x = np.zeros((n, self.k * self.width), dtype=np.int64)
        self.best_e = np.full(n, np.inf)
        self.best_ok = np.zeros(n, dtype=bool)
        self.queries = np.zeros(n, dtype=np.int64)
        self.active = np.ones(n, dtype=bool)
        self.history: list[list[float]] = [[] for _ in range(n)]
        self._finished: list[int] = []
        # The pattern search: its centre (an incumbent that may differ from the best after a
        # restart), step, group, moves tried at this step without improvement, and a turn
        # counter that rotates the moves when a step has fewer slots than moves.
        self.centre_x = np.zeros_like(self.best_x)
        self.centre_e = np.full(n, np.inf)
        self.centre_ok = np.zeros(n, dtype=bool)
        self.pstep = np.full(n, PATTERN_STEP, dtype=np.int64)
        self.pgroup = np.zeros(n, dtype=np.int64)
        self.ptried = np.zeros(n, dtype=np.int64)
        self.pturn = np.zeros(n, dtype=np.int64)
        # Memo: every candidate queried (as proposed and as scored), so no query repeats one;
        # the best (success, energy, candidate) per position tuple, for restarts; and the
        # positions already used as centres.
        self.seen: list[set[bytes]] = [set() for _ in range(n)]
        self.by_pos: list[dict[bytes, tuple[bool, float, np.ndarray]]] = [{} for _ in range(n)]
        self.centres: list[set[bytes]] = [set() for _ in range(n)]

    @property
    def done(self) -> bool:
        return not self.active.any()

    # -- proposals -----------------------------------------------------------------------
    def _uniforms(self, rows: np.ndarray, n: int) -> np.ndarray:
        """(R, n, U) uniforms: every random decision of a step, drawn in one call per problem
        from its own stream (so a problem's draws do not depend on the others)."""
        return np.stack([self.rngs[int(b)].random((n, self._n_uniforms)) for b in rows])

    @property
    def _n_uniforms(self) -> int:
        # kind, prior position use, prior pick, 2 prior jitters, 2 local offsets, local corner
        # switch, refine: group, how, channel, power, sign, value, 2 nudges, prior colour use,
        # prior colour pick; then per group: position (2), corner (C) and a choice key.
        # ... and the local move's smallest radius.
        return 18 + self.k * (3 + self.c)

    def _propose(self, rows: np.ndarray, n: int) -> np.ndarray:
        """``n`` proposals (R, n, k * (2 + C)) int64 for each problem of ``rows`` (R,)."""
        k, c, w, h = self.k, self.c, self.w, self.h
        u = self._uniforms(rows, n)
        r_ = len(rows)
        g0 = 17
        gpos = u[..., g0 : g0 + 2 * k].reshape(r_, n, k, 2)
        gcol = u[..., g0 + 2 * k : g0 + (2 + c) * k].reshape(r_, n, k, c)
        keys = u[..., g0 + (2 + c) * k : g0 + (3 + c) * k].reshape(r_, n, k)
        # Global groups: uniform positions and corners, or (share w) a recorded success.
        glob = np.empty((r_, n, k, 2 + c), dtype=np.int64)
        glob[..., 0] = np.minimum((gpos[..., 0] * w).astype(np.int64), w - 1)
        glob[..., 1] = np.minimum((gpos[..., 1] * h).astype(np.int64), h - 1)
        glob[..., 2:] = np.where(gcol < 0.5, 0, 255)
        if self.prior is not None and len(self.prior):
            ppos = np.asarray(self.prior.positions, dtype=np.int64)
            pcol = np.asarray(self.prior.corners, dtype=np.int64)
            # Position and colour are drawn from the mixture independently: a colour that
            # worked elsewhere is tried at new positions too (and the other way round).
            share = self.prior.share()
            use_pos, use_col = u[..., 1] < share, u[..., 15] < share
            pick = np.minimum((u[..., 2] * len(ppos)).astype(np.int64), len(ppos) - 1)
            pick_col = np.minimum((u[..., 16] * len(ppos)).astype(np.int64), len(ppos) - 1)
            jitter = np.floor(u[..., 3:5] * 3).astype(np.int64) - 1
            px = np.clip(ppos[pick, 0] + jitter[..., 0], 0, w - 1)
            py = np.clip(ppos[pick, 1] + jitter[..., 1], 0, h - 1)
            # The prior replaces the first drawn group (the one a k=1 search uses).
            first = glob[:, :, 0]
            first[..., 0] = np.where(use_pos, px, first[..., 0])
            first[..., 1] = np.where(use_pos, py, first[..., 1])
            first[..., 2:] = np.where(use_col[..., None], pcol[pick_col], first[..., 2:])
        best = self.best_x[rows].reshape(r_, 1, k, 2 + c)
        fresh = ~np.isfinite(self.best_e[rows])
        out = np.repeat(best, n, axis=1)
        # Kind: 0 global, 1 local, 2 refine, by the mixture of each problem's state.
        mix = np.where(self.best_ok[rows][:, None], EXPLOIT_MIX, EXPLORE_MIX) if not \
            self.labels_only else np.tile((1.0, 0.0, 0.0), (r_, 1))
        cum = np.cumsum(mix, axis=1)
        kind = (u[..., 0:1] >= cum[:, None, :2]).sum(axis=-1)
        spent = (self.queries[rows] / self.max_queries)[:, None]
        # Global: m groups re-drawn, the m with the smallest keys (Sparse-RS: k/2 falling to 1).
        m = np.maximum(1, np.round(k / 2 * 0.5 ** np.floor(spent * 8))).astype(np.int64) \
            if k > 1 else np.ones_like(spent, dtype=np.int64)
        rank = keys.argsort(axis=-1).argsort(axis=-1)
        redraw = (kind == 0)[..., None] & (rank < m[..., None])
        redraw |= fresh[:, None, None]  # the first step: k global groups each
        out = np.where(redraw[..., None], glob, out)
        # Local and refine act on one group: the one with the smallest key.
        grp = keys.argmin(axis=-1)
        ii, jj = np.indices((r_, n))
        sel = out[ii, jj, grp]  # (R, n, 2 + C) copies
        # The local radius shrinks with the queries spent, not with the share of the budget, so
        # a larger budget does not slow the start (a run is then, before its budget ends, the
        # run with any larger budget).
        done = np.minimum(self.queries[rows] / LOCAL_SCHEDULE, 1.0)[:, None]
        # After the schedule a local move still reaches 1, 2 or 4 pixels (a third each): the
        # best places of a strided CNN are often 2 pixels apart, not 1.
        floor = 2 ** np.minimum((u[..., -1] * 3).astype(np.int64), 2)
        radius = np.maximum(floor, np.round(max(h, w) / 8 * (1.0 - done))).astype(np.int64)
        off = np.floor(u[..., 5:7] * (2 * radius[..., None] + 1)).astype(np.int64) - radius[..., None]
        local = (kind == 1) & ~fresh[:, None]
        loc = sel.copy()
        loc[..., 0] = np.clip(sel[..., 0] + off[..., 0], 0, w - 1)
        loc[..., 1] = np.clip(sel[..., 1] + off[..., 1], 0, h - 1)
        loc[..., 2:] = np.where((u[..., 7] < 0.5)[..., None], glob[:, :, 0, 2:], sel[..., 2:])
        refine = (kind == 2) & ~fresh[:, None]
        ref = sel.copy()
        how = u[..., 8]
        ch = np.minimum((u[..., 9] * c).astype(np.int64), c - 1)
        power = 2 ** np.minimum((u[..., 10] * 8).astype(np.int64), 7)
        sign = np.where(u[..., 11] < 0.5, -1, 1)
        value = np.minimum((u[..., 12] * 256).astype(np.int64), 255)
        nudge = np.floor(u[..., 13:15] * 3).astype(np.int64) - 1
        chan = np.take_along_axis(sel[..., 2:], ch[..., None], axis=-1)[..., 0]
        new_chan = np.where(how < 0.4, value, np.clip(chan + sign * power, 0, 255))
        np.put_along_axis(ref[..., 2:], ch[..., None], new_chan[..., None], axis=-1)
        move = how < 0.2
        ref[..., 0] = np.where(move, np.clip(sel[..., 0] + nudge[..., 0], 0, w - 1), sel[..., 0])
        ref[..., 1] = np.where(move, np.clip(sel[..., 1] + nudge[..., 1], 0, h - 1), sel[..., 1])
        ref[..., 2:] = np.where(move[..., None], sel[..., 2:], ref[..., 2:])
        changed = np.where(local[..., None], loc, np.where(refine[..., None], ref, sel))
        out[ii, jj, grp] = changed
        out = out.reshape(r_, n, k * (2 + c))
        # A proposal equal to the best would be a wasted query: a global group instead.
        same = np.all(out == self.best_x[rows][:, None, :], axis=-1) & ~fresh[:, None]
        if same.any():
            repl = out.reshape(r_, n, k, 2 + c)
            repl[same, 0] = glob[same, 0]
        return out

    # -- the pattern search (after the first success, or PATTERN_AFTER queries) ------------
    def _pattern_on(self, b: int) -> bool:
        return not self.labels_only and np.isfinite(self.best_e[b]) and \
            bool(self.best_ok[b] or self.queries[b] >= PATTERN_AFTER)

    def _moves(self, b: int) -> np.ndarray:
        """The pattern moves around problem ``b``'s centre (M, k * (2 + C)): each channel of the
        active group plus and minus the step, the group moved by ``d`` pixels to its 8
        neighbouring positions with the centre's colour (``d`` 1 and 2 in turn as the step
        halves: strided CNNs often respond to every second pixel), and two diagonal colour moves
        (every channel -step, 0 or +step)."""
        c, width = self.c, self.width
        centre = self.centre_x[b].reshape(self.k, width)
        g, s = int(self.pgroup[b]), int(self.pstep[b])
        dist = 1 + int(s).bit_length() % 2
        moves = np.repeat(centre[None], 2 * c + 8 + 2, axis=0)
        i = 0
        for ch in range(c):
            for sign in (1, -1):
                moves[i, g, 2 + ch] = min(255, max(0, int(centre[g, 2 + ch]) + sign * s))
                i += 1
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                if dx or dy:
                    moves[i, g, 0] = min(self.w - 1, max(0, int(centre[g, 0]) + dist * dx))
                    moves[i, g, 1] = min(self.h - 1, max(0, int(centre[g, 1]) + dist * dy))
                    i += 1
        d = self.rngs[b].integers(-1, 2, size=(2, c))
        d[~d.any(axis=1), 0] = 1
        moves[i:, g, 2:] = np.clip(centre[g, 2:] + d * s, 0, 255)
        return moves.reshape(len(moves), -1)

    def _with_pattern(self, rows: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Put pattern moves into the first slots of ``cand`` (R, n, D) and replace proposals
        already queried (or repeated within the step) by fresh random ones; returns the
        candidates and which slots hold pattern moves (R, n) bool."""
        n = cand.shape[1]
        mask = np.zeros(cand.shape[:2], dtype=bool)
        for j, b in enumerate(rows.tolist()):
            if self._pattern_on(b):
                if not np.isfinite(self.centre_e[b]):
                    self._move_centre(b, self.best_x[b], self.best_e[b], self.best_ok[b], True)
                moves = self._moves(b)
                slots = min(len(moves), n if self.best_ok[b] else
                            max(1, int(n * PATTERN_SHARE_BEFORE)))
                if slots < len(moves):
                    moves = np.roll(moves, -int(self.pturn[b] % len(moves)), axis=0)
                    self.pturn[b] += slots
                cand[j, :slots] = moves[:slots]
                mask[j, :slots] = True
            seen, fresh = self.seen[b], set()
            bad = []
            for i in range(n):
                key = cand[j, i].tobytes()
                if key in seen or key in fresh:
                    bad.append(i)
                else:
                    fresh.add(key)
            for _ in range(DEDUPE_ROUNDS):
                if not bad:
                    break
                repl = self._propose(np.array([b]), len(bad))[0]
                still = []
                for i, r in zip(bad, repl, strict=True):
                    key = r.tobytes()
                    if key in seen or key in fresh:
                        still.append(i)
                    else:
                        cand[j, i] = r
                        mask[j, i] = False
                        fresh.add(key)
                bad = still
            # Still repeated (a small neighbourhood exhausted): a uniform random candidate, any
            # position and any integer colour for one group (practically never seen).
            rng = self.rngs[b]
            for i in bad:
                for _ in range(100):
                    r = cand[j, i].reshape(self.k, self.width).copy()
                    g = int(rng.integers(self.k))
                    r[g, 0], r[g, 1] = rng.integers(self.w), rng.integers(self.h)
                    r[g, 2:] = rng.integers(0, 256, size=self.c)
                    key = r.tobytes()
                    if key not in seen and key not in fresh:
                        cand[j, i] = r.reshape(-1)
                        mask[j, i] = False
                        fresh.add(key)
                        break
        return cand, mask

    def _move_centre(self, b: int, x: np.ndarray, e: float, ok: bool, new_place: bool) -> None:
        self.centre_x[b] = x
        self.centre_e[b], self.centre_ok[b] = e, ok
        self.ptried[b] = 0
        if new_place:
            self.pstep[b] = PATTERN_STEP
            self.centres[b].add(self._pos_key(x))

    def _pos_key(self, x: np.ndarray) -> bytes:
        return np.ascontiguousarray(np.asarray(x, dtype=np.int64).reshape(self.k, self.width)[:, :2]
                                    ).tobytes()

    def _restart(self, b: int) -> None:
        """The centre converged (step below 1 on every group): continue from the best position
        not yet used as a centre and not next to the best (the second-best place), or, when
        there is none, from the best again at the first step (the memo then turns repeated
        moves into random proposals)."""
        best = self.best_x[b].reshape(self.k, self.width)[:, :2]
        pick = None
        for key, (ok, e, x) in self.by_pos[b].items():
            if key in self.centres[b]:
                continue
            pos = x.reshape(self.k, self.width)[:, :2]
            if np.abs(pos - best).max() <= 1:
                continue
            if pick is None or (ok and not pick[0]) or (ok == pick[0] and e < pick[1]):
                pick = (ok, e, x)
        if pick is None:
            pick = (bool(self.best_ok[b]), float(self.best_e[b]), self.best_x[b])
        self._move_centre(b, pick[2], pick[1], pick[0], True)

    def _pattern_update(self, rows: np.ndarray, scored: np.ndarray, e: np.ndarray, ok: np.ndarray,
                        mask: np.ndarray, best_changed: np.ndarray) -> None:
        n_moves = 2 * self.c + 8 + 2
        for j, b in enumerate(rows.tolist()):
            seen, places = self.seen[b], self.by_pos[b]
            for i in range(scored.shape[1]):
                seen.add(scored[j, i].tobytes())
                key = self._pos_key(scored[j, i])
                old = places.get(key)
                if old is None or (ok[j, i] and not old[0]) or (ok[j, i] == old[0] and e[j, i] < old[1]):
                    places[key] = (bool(ok[j, i]), float(e[j, i]), scored[j, i].copy())
            if not np.isfinite(self.centre_e[b]):
                continue
            improved = False
            idx = np.flatnonzero(mask[j])
            if idx.size:
                i = idx[np.lexsort((e[j, idx], ~ok[j, idx]))[0]]
                if (ok[j, i] and not self.centre_ok[b]) or \
                        (ok[j, i] == self.centre_ok[b] and e[j, i] < self.centre_e[b]):
                    self._move_centre(b, scored[j, i], e[j, i], ok[j, i], False)
                    improved = True
            if best_changed[j] and ((self.best_ok[b] and not self.centre_ok[b]) or (
                    self.best_ok[b] == self.centre_ok[b] and self.best_e[b] < self.centre_e[b])):
                # A random proposal beat the centre: search from there.
                moved = self._pos_key(self.best_x[b]) != self._pos_key(self.centre_x[b])
                self._move_centre(b, self.best_x[b], self.best_e[b], self.best_ok[b], moved)
                improved = True
            if improved:
                continue
            self.ptried[b] += idx.size
            if self.ptried[b] >= n_moves:  # every move at this step tried: halve it
                self.ptried[b] = 0
                self.pstep[b] //= 2
                if self.pstep[b] == 0:
                    self.pgroup[b] = (self.pgroup[b] + 1) % self.k
                    self.pstep[b] = PATTERN_STEP
                    if self.pgroup[b] == 0:
                        self._restart(b)

    # -- the loop ------------------------------------------------------------------------
    def step(self) -> int:
        """One step for every live problem; returns the queries spent (all problems)."""
        live = np.flatnonzero(self.active)
        if not live.size:
            return 0
        sizes = np.minimum(self.config.candidates, self.max_queries - self.queries[live])
        spent = 0
        # Problems with fewer queries left than a full step are scored in their own call.
        for size in np.unique(sizes):
            rows = live[sizes == size]
            cand = self._propose(rows, int(size))
            cand, mask = self._with_pattern(rows, cand)
            energies, success, scored = self.objective(rows, cand)
            spent += int(size) * len(rows)
            scored = np.asarray(scored, dtype=np.int64)
            energies = np.asarray(energies, dtype=np.float64)
            success = np.asarray(success, dtype=bool)
            for j, b in enumerate(rows.tolist()):
                self.seen[b].update(c.tobytes() for c in cand[j])
            best_changed = self._update(rows, scored, energies, success)
            self._pattern_update(rows, scored, energies, success, mask, best_changed)
            for b in rows[~self.active[rows]].tolist():  # finished: free its memo
                self.seen[b], self.by_pos[b] = set(), {}
        return spent

    def _update(self, rows: np.ndarray, scored: np.ndarray, e: np.ndarray,
                ok: np.ndarray) -> np.ndarray:
        n = e.shape[1]
        before_block = self.queries[rows] // self.config.history_block
        self.queries[rows] += n
        # Per row: successful first, then the lowest energy, then the first proposed.
        i = np.lexsort((np.broadcast_to(np.arange(n), e.shape), e, ~ok), axis=-1)[:, 0] \
            if n > 1 else np.zeros(len(rows), dtype=np.int64)
        at = np.arange(len(rows))
        cand_e, cand_ok = e[at, i], ok[at, i]
        was_ok = self.best_ok[rows].copy()
        better = (cand_ok & ~was_ok) | ((cand_ok == was_ok) & (cand_e < self.best_e[rows]))
        win = rows[better]
        self.best_x[win] = scored[at[better], i[better]]
        self.best_e[win] = cand_e[better]
        self.best_ok[win] = cand_ok[better]
        if self.prior is not None:
            for b in rows[self.best_ok[rows] & ~was_ok]:
                self.prior.add(self.best_x[b])
        stop = (self.queries[rows] >= self.max_queries) | (self.stop_on_success & self.best_ok[rows])
        crossed = self.queries[rows] // self.config.history_block > before_block
        for j, b in enumerate(rows.tolist()):
            if not self.history[b] or stop[j] or crossed[j]:
                self.history[b].append(float(self.best_e[b]))
            if stop[j]:
                self.active[b] = False
                self._finished.append(b)
        return better

    def take_finished(self) -> list[tuple[int, DEResult]]:
        """Problems that stopped since the last call, as ``(index, result)``."""
        out = [(b, self.result(b)) for b in self._finished]
        self._finished = []
        return out

    def result(self, b: int) -> DEResult:
        x = self.best_x[b].astype(np.float64)
        x.setflags(write=False)
        history = np.asarray(self.history[b], dtype=np.float64)
        history.setflags(write=False)
        stopped = bool(self.best_ok[b] and self.stop_on_success)
        return DEResult(problem_id=int(self.ids[b]), x=x, fun=float(self.best_e[b]),
                        nit=len(history) - 1, nfev=int(self.queries[b]), converged=False,
                        message=MESSAGE_SUCCESS if stopped else MESSAGE_BUDGET,
                        history=history, stopped=stopped)
