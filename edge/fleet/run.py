"""The driver of `edge-anon batch`: plan, start or join Ray, detect chunks on actors, paint inputs in tasks.

Ray is the engine (actors and tasks of Ray core; no scheduler of ours beyond keeping every actor
busy). Without an address a local instance is started inside the process, with its temp folder,
sockets, logs and spill folder inside one private folder (0700) that is removed at the end, an
object store sized so that the little that goes through it (detections and summaries, never
pixels: see edge.fleet.worker) never spills, and the hardening hook in every worker process.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from edge.config import Config
from edge.fleet import plan
from edge.fleet.plan import Chunk, Input, Ledger, PlanError

log = logging.getLogger(__name__)

PAINT_CPUS = 0.5  # a paint task's share: decode, mask and encode are cheap beside detection
IN_FLIGHT_PER_ACTOR = 2  # one running, one queued: an actor never waits for the driver between chunks
SETUP_HOOK = "edge.fleet.worker.setup_worker"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM while a batch runs (see interrupts()); `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def interrupts():
    """Inside: SIGINT and SIGTERM raise Interrupted in the main thread, so that both end a run the same way
    (the summary, finished chunks kept). ray.init() puts its own SIGTERM handler in place (it exits at
    once, without a summary): enter this after connecting."""
    def handler(signum, _frame):
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class BatchError(RuntimeError):
    """The batch cannot start (named, one line): bad inputs list, no CPU left for painting, models refused."""


def worker_env() -> dict:
    """The runtime_env of every worker process: hardened by the hook, telemetry off from the first import."""
    return {"worker_process_setup_hook": SETUP_HOOK,
            "env_vars": {"ORT_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}}


RAY_AUTH_VAR = "RAY_AUTH_MODE"


class LocalRay:
    """An embedded Ray instance whose every file lies in one private folder, removed at close().

    Nothing of it outlives this process (edge.fleet.reaper): its processes carry a marker variable,
    and a reaper started before Ray kills them and removes the folder when this process ends, however
    it ends; a folder left by a driver that could not be reaped is removed by the next run.
    """

    def __init__(self, num_cpus: int, object_store_mb: int, temp_root: str | None = None) -> None:
        if "ray" not in sys.modules:
            # Ray turns token authentication on for a new local instance and prints a notice about it on every
            # run; asking for it ourselves keeps it without the notice (a user's own RAY_AUTH_MODE wins). Ray
            # reads the variable when it is first imported: set later, driver and instance disagree and
            # ray.init fails, so a process that imported Ray already keeps Ray's own default (and notice).
            os.environ.setdefault(RAY_AUTH_VAR, "token")
        import ray

        from edge.fleet import reaper

        root = temp_root or tempfile.gettempdir()
        for stale in reaper.remove_stale(root):
            log.warning("batch: removed %s, left by a batch driver that is gone", stale)
        self.private = Path(tempfile.mkdtemp(prefix=reaper.PREFIX, dir=root))  # 0700
        self._lock = reaper.hold(self.private)
        self.spill = self.private / "spill"
        self.spill.mkdir(mode=0o700)
        self._reaper = reaper.start(self.private)
        self._marker = os.environ.get(reaper.INSTANCE_VAR)
        os.environ[reaper.INSTANCE_VAR] = str(self.private)  # inherited by every process Ray starts
        try:
            ray.init(num_cpus=num_cpus, object_store_memory=object_store_mb * 2**20,
                     _temp_dir=str(self.private / "ray"), include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env=worker_env(), object_spilling_directory=str(self.spill))
        except BaseException:
            self._release()
            raise

    def close(self) -> None:
        import ray

        try:
            ray.shutdown()
        finally:
            self._release()

    def _release(self) -> None:
        from edge.fleet import reaper

        if self._marker is None:
            os.environ.pop(reaper.INSTANCE_VAR, None)
        else:
            os.environ[reaper.INSTANCE_VAR] = self._marker
        self._reaper.stdin.close()  # the reaper kills what ray.shutdown() left running, and removes the folder
        try:
            self._reaper.wait(timeout=60)
        except subprocess.TimeoutExpired:
            log.warning("batch: the reaper of %s did not finish in 60 s; it goes on alone", self.private)
        shutil.rmtree(self.private, ignore_errors=True)
        self._lock.close()

    def __enter__(self) -> "LocalRay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class InputOutcome:
    name: str
    path: str
    status: str  # complete | incomplete | done before | failed | not finished
    counters: dict = field(default_factory=dict)
    output: str = ""
    error: str = ""
    incomplete: tuple[str, ...] = ()  # what the output lacks (edge.runtime.service.incomplete_reasons)

    def line(self) -> str:
        from edge.runtime.audit import frame_counts

        if self.status in ("failed", "not finished"):
            return f"{self.name}: {self.status}" + (f" ({self.error})" if self.error else "") + f", input {self.path}"
        f = frame_counts(self.counters)
        whole = ", ".join(f"{k} {v}" for k, v in f["masked_whole_by_reason"].items() if v)
        dropped = ", ".join(f"{k} {v}" for k, v in f["dropped_by_reason"].items() if v)
        lacking = f" ({'; '.join(self.incomplete)})" if self.incomplete else ""
        return (f"{self.name}: {self.status}{lacking}, {f['in']} frames in, {f['masked']} masked, "
                f"{f['masked_whole']} masked whole" + (f" ({whole})" if whole else "")
                + f", {f['dropped']} dropped" + (f" ({dropped})" if dropped else "") + f", output {self.output}")


@dataclass
class BatchResult:
    outcomes: list[InputOutcome]
    workers: int
    frames_detected: int
    wall_s: float
    ray_start_s: float = 0.0
    stopped_early: bool = False
    actor_ms: float = 0.0  # decode + detect time inside the actors, summed over the chunks of this run
    actors_start_s: float = 0.0  # from creating the actors to all of them loaded, verified and warmed up
    interrupted: int = 0  # the signal (SIGINT, SIGTERM) that cut the run short; 0 if none

    def exit_code(self) -> int:
        """128 + the signal when interrupted; 1 when an input failed or is not finished; else 0 (whether an
        output lacks part of its input is `incomplete()`, the command line's exit code 3)."""
        if self.interrupted:
            return 128 + self.interrupted
        bad = any(o.status in ("failed", "not finished") for o in self.outcomes)
        return 1 if bad or self.stopped_early else 0

    def incomplete(self) -> list[InputOutcome]:
        """The inputs that ran to their end but whose output lacks part of them (now or in an earlier run)."""
        return [o for o in self.outcomes if o.incomplete]

    def summary(self) -> str:
        n = {s: sum(o.status == s for o in self.outcomes)
             for s in ("complete", "incomplete", "done before", "failed", "not finished")}
        rate = self.frames_detected / self.wall_s if self.wall_s > 0 else 0.0
        return (f"{len(self.outcomes)} input(s): {n['complete']} complete, "
                + (f"{n['incomplete']} incomplete, " if n["incomplete"] else "")
                + f"{n['done before']} done before, "
                f"{n['failed']} failed, {n['not finished']} not finished; {self.frames_detected} frames detected "
                f"in {self.wall_s:.1f} s ({rate:.1f} frames/s) on {self.workers} worker(s)"
                + (f", {self.actor_ms / self.frames_detected:.0f} ms per frame in an actor" if self.frames_detected else "")
                + f"; actors ready after {self.actors_start_s:.1f} s")


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))


def actor_shares(cfg: Config) -> tuple[int, float, float]:
    """(actors, CPUs each, GPUs each) for the cluster: GPU actors where GPUs are and the provider uses them."""
    import ray

    fleet = cfg.fleet
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0.0))
    cpus = float(resources.get("CPU", 0.0))
    if gpus and cfg.runtime.provider != "cpu":
        workers = fleet.workers or int(gpus)
        return workers, min(fleet.cpus_per_actor, max(0.05, (cpus - PAINT_CPUS) / workers)), min(1.0, gpus / workers)
    workers = fleet.workers or max(1, math.floor((cpus - PAINT_CPUS) / fleet.cpus_per_actor))
    if workers * fleet.cpus_per_actor + PAINT_CPUS > cpus + 1e-9:
        raise BatchError(f"fleet.workers {workers} x fleet.cpus_per_actor {fleet.cpus_per_actor:g} leaves less than "
                         f"{PAINT_CPUS:g} of the {cpus:g} CPUs for painting: lower one of them")
    return workers, fleet.cpus_per_actor, 0.0


def run_batch(cfg: Config, inputs: list[str], output_dir: str | os.PathLike, *, camera_id: str = "replay",
              max_chunks: int | None = None, stream: TextIO | None = None,
              on_chunk: Callable[[int, list[int]], None] | None = None, ray_start_s: float = 0.0) -> BatchResult:
    """Anonymize every input into `output_dir` on the Ray instance this process is connected to.

    `max_chunks` stops after that many detection chunks (a partial run, resumed by the next one);
    `on_chunk(done, pids)` runs after every finished chunk with the actors' first process ids (tests
    kill one there).
    """
    import ray

    from edge.fleet import worker
    from edge.progress import Progress
    from edge.runtime.service import incomplete_reasons

    stream = stream if stream is not None else sys.stderr
    t0 = time.monotonic()
    out = Path(os.path.realpath(output_dir))  # realpath: a symlink loop is refused by mkdir in one line
    paths = plan.read_inputs(inputs)
    if not paths:
        raise BatchError("no inputs")
    _check_apart(out, paths)
    workers, cpus_each, gpus_each = actor_shares(cfg)  # refused before anything is made
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out)
    # without the config's own cameras: their [cameras.detect] classes would number the class table
    # differently from the one replay camera each paint task runs
    run_cfg = worker.actor_config(dataclasses.replace(cfg, cameras=()), cfg.fleet.threads or max(1, round(cpus_each)))
    digest = plan.config_digest(run_cfg)
    outcomes: dict[str, InputOutcome] = {}
    items: list[Input] = []
    for p, name in zip(paths, plan.output_names(paths)):
        try:
            items.append(plan.plan_input(p, name, digest))
        except (OSError, PlanError) as e:
            outcomes[name] = InputOutcome(name, str(p), "failed", error=str(e))
            log.error("batch: %s", e)
    todo = []
    for item in items:
        if ledger.done.get(item.key, {}).get("name") == item.name and (out / item.name).exists():
            outcomes[item.name] = InputOutcome(item.name, item.path, "done before",
                                               counters=ledger.done[item.key].get("counters", {}),
                                               output=str(out / item.name),
                                               incomplete=tuple(ledger.done[item.key].get("incomplete", ())))
        else:
            _remove_staging(out, item.name)
            todo.append(item)
    detected = 0
    actor_ms = actors_start_s = 0.0
    stopped = False
    interrupted = 0
    if todo:
        # SPREAD: on a cluster the actors go to as many nodes as they can (one node lost costs the fewest
        # of them); on one machine it changes nothing
        actor_cls = ray.remote(worker.DetectWorker).options(
            num_cpus=cpus_each, num_gpus=gpus_each, max_restarts=cfg.fleet.max_retries,
            max_task_retries=cfg.fleet.max_retries, scheduling_strategy="SPREAD")
        paint = ray.remote(worker.paint_task).options(num_cpus=PAINT_CPUS, max_retries=cfg.fleet.max_retries,
                                                       retry_exceptions=False)
        progress = None
        actors: list = []
        failed: dict[str, str] = {}
        by_key = {item.key: item for item in todo}
        try:
            t_actors = time.monotonic()
            actors = [actor_cls.remote(run_cfg) for _ in range(workers)]
            try:
                infos = ray.get([a.info.remote() for a in actors])
                actors_start_s = time.monotonic() - t_actors
            except Exception as e:
                for a in actors:
                    ray.kill(a)
                ledger.close()
                _discard_untouched(out, made)
                raise BatchError(f"the detector actors did not start: {_one_line(e)}") from None
            models, providers = infos[0]["models"], infos[0]["providers"]
            chunks_of = {item.key: plan.chunks(item, cfg.fleet.chunk_frames) for item in todo}
            waiting = [c for item in todo for c in chunks_of[item.key] if not ledger.has_chunk(item.key, c.index)]
            total = sum(item.frames or 0 for item in todo)
            progress = Progress(total or None, stream, label="batch", counts_drops=False)
            in_flight: dict = {}  # ref -> (chunk, actor index)
            paints: dict = {}  # ref -> item
            load = [0] * workers
            done_chunks = 0
            todo_paths = {item.path for item in todo}

            def files_label() -> str:
                complete = sum(o.status in ("complete", "incomplete") for o in outcomes.values()
                               if o.path in todo_paths)
                return f"batch {complete}/{len(todo)} files" + (f", {len(failed)} failed" if failed else "")

            def submit_paints() -> None:
                for item in todo:
                    if item.key in failed or item.name in outcomes or any(v is item for v in paints.values()):
                        continue
                    n = len(chunks_of[item.key])
                    if all(ledger.has_chunk(item.key, i) for i in range(n)):
                        results = ledger.load_chunks(item.key, n)
                        paints[paint.remote(run_cfg, item, results, models, providers, str(out), camera_id)] = item

            down: set[int] = set()  # actors lost (their node, their process) until a probe finds them back
            probes: dict = {}  # ref of info() -> actor index
            lost_tries: dict = {}  # chunk (key, index) or input key -> times resubmitted after a lost worker
            replaced = 0

            def fill() -> None:
                while waiting and not stopped:
                    usable = [i for i in range(workers) if i not in down]
                    if not usable:
                        return
                    k = min(usable, key=lambda i: load[i])
                    if load[k] >= IN_FLIGHT_PER_ACTOR:
                        return
                    chunk = waiting.pop(0)
                    if chunk.input.key in failed:
                        continue
                    in_flight[actors[k].detect.remote(chunk)] = (chunk, k)
                    load[k] += 1

            def retry_lost(what, e: Exception) -> bool:
                """True when `e` is Ray losing a worker or a node, not the task's own error, and `what` has
                tries left: Ray's own retries run out within a second while a dead node is not yet known dead."""
                if not _lost(e) or lost_tries.get(what, 0) >= cfg.fleet.max_retries + 1:
                    return False
                lost_tries[what] = lost_tries.get(what, 0) + 1
                return True

            def set_down(k: int) -> None:
                if k not in down:
                    down.add(k)
                    probes[actors[k].info.remote()] = k

            def replace(k: int, e: Exception) -> None:
                nonlocal replaced
                replaced += 1
                if replaced > workers * (cfg.fleet.max_retries + 1):
                    raise BatchError(f"the detector actors keep getting lost: {_one_line(e)}")
                log.warning("batch: detector %d lost (%s); a new one takes its place", k, _one_line(e))
                ray.kill(actors[k], no_restart=True)
                actors[k] = actor_cls.remote(run_cfg)
                probes[actors[k].info.remote()] = k  # usable once its models are loaded and verified

            submit_paints()
            fill()
            while in_flight or paints or probes:
                ready, _ = ray.wait([*in_flight, *paints, *probes], num_returns=1)
                ref = ready[0]
                if ref in probes:
                    k = probes.pop(ref)
                    try:
                        info = ray.get(ref)
                    except Exception as e:
                        if not _lost(e):
                            raise BatchError(f"a detector actor did not start: {_one_line(e)}") from None
                        replace(k, e)
                        continue
                    if info["models"] != models:
                        raise BatchError(f"a new detector actor runs other models: {info['models']} != {models}")
                    down.discard(k)
                    fill()
                elif ref in in_flight:
                    chunk, k = in_flight.pop(ref)
                    load[k] -= 1
                    try:
                        result = ray.get(ref)
                    except Exception as e:  # an input that cannot be decoded, or a chunk out of retries
                        if retry_lost((chunk.input.key, chunk.index), e):
                            log.warning("batch: %s: chunk %d lost with its worker (%s); done again",
                                        chunk.input.path, chunk.index, _one_line(e))
                            waiting.insert(0, chunk)
                            set_down(k)
                        elif chunk.input.key not in failed:
                            failed[chunk.input.key] = _one_line(e)
                            log.error("batch: %s: chunk %d failed: %s", chunk.input.path, chunk.index,
                                      failed[chunk.input.key])
                    else:
                        if chunk.input.key not in failed:
                            ledger.add_chunk(chunk.input.key, chunk.index, result)
                        detected += len(result.seq)
                        actor_ms += result.detect_ms
                        done_chunks += 1
                        progress.label = files_label()
                        progress.update(detected)
                        if max_chunks is not None and done_chunks >= max_chunks:
                            stopped = True
                        if on_chunk is not None:
                            on_chunk(done_chunks, [info["pid"] for info in infos])
                    if not stopped:
                        submit_paints()
                    fill()
                else:
                    item = paints.pop(ref)
                    try:
                        summary = ray.get(ref)
                    except Exception as e:
                        if retry_lost(item.key, e):
                            log.warning("batch: %s: painting lost with its worker (%s); done again", item.path,
                                        _one_line(e))
                            submit_paints()
                            continue
                        failed[item.key] = _one_line(e)
                        log.error("batch: %s: painting failed: %s", item.path, failed[item.key])
                        continue
                    lacking = incomplete_reasons(summary["counters"], summary["sources"], summary["sink"])
                    ledger.add_done(item.key, {"name": item.name, "output": summary["output"],
                                               "counters": summary["counters"], "incomplete": lacking})
                    outcomes[item.name] = InputOutcome(item.name, item.path,
                                                       "incomplete" if lacking else "complete", summary["counters"],
                                                       summary["output"], incomplete=tuple(lacking))
                    progress.label = files_label()
                    progress.update(detected, force=True)
                    print(("\n" if progress.enabled else "") + f"batch: {outcomes[item.name].line()}", file=stream,
                          flush=True)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM through interrupts(): finished chunks stay in the ledger
            interrupted = getattr(e, "signum", signal.SIGINT)
        if progress is not None:
            progress.close()
        for key, error in failed.items():
            item = by_key[key]
            outcomes[item.name] = InputOutcome(item.name, item.path, "failed", error=error)
        for item in todo:
            why = f"interrupted ({signal.Signals(interrupted).name})" if interrupted else "stopped early"
            outcomes.setdefault(item.name, InputOutcome(item.name, item.path, "not finished",
                                                        error=f"{why}; rerun to finish"))
            _remove_staging(out, item.name)
        if not interrupted:  # interrupted, they end with this job: killed with a task in flight, Ray prints its error
            for a in actors:
                ray.kill(a)
    ledger.close()
    ordered = [outcomes[n] for n in plan.output_names(paths)]
    for o in ordered:
        if o.status not in ("complete", "incomplete"):  # those were said as they finished
            print(f"batch: {o.line()}", file=stream, flush=True)
    return BatchResult(ordered, workers if todo else 0, detected, time.monotonic() - t0, ray_start_s, stopped, actor_ms,
                       actors_start_s, interrupted)


def _check_apart(out: Path, paths: list[Path]) -> None:
    from edge.sinks.folder import FolderSinkError, check_apart

    try:
        check_apart(out, paths)
    except FolderSinkError as e:
        raise BatchError(str(e)) from None


def _remove_staging(out: Path, name: str) -> None:
    """Staging folders of an input left by a killed paint attempt: masked frames only, never complete."""
    for p in out.glob(f".{name}.*.partial"):
        shutil.rmtree(p, ignore_errors=True)


def _lost(e: BaseException) -> bool:
    """Ray lost the worker, actor or node that ran the task (not the task's own exception, RayTaskError)."""
    from ray.exceptions import RayError, RayTaskError

    return isinstance(e, RayError) and not isinstance(e, RayTaskError)


def _discard_untouched(out: Path, made: bool) -> None:
    """A refused run leaves nothing behind: the empty ledger it made, and the output folder if it made it."""
    root = out / plan.LEDGER_DIR
    with contextlib.suppress(OSError):
        if (root / plan.LEDGER_NAME).stat().st_size == 0 and [p.name for p in root.iterdir()] == [plan.LEDGER_NAME]:
            shutil.rmtree(root)
        if made:
            out.rmdir()  # refused when anything else is in it


EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Exit): ")


def _one_line(e: BaseException) -> str:
    """The exception a worker raised, from Ray's wrapping of it (its traceback, then the exception's lines):
    the last line that names an exception, else the last line."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    named = [line for line in lines if EXCEPTION_LINE.match(line)]
    return (named[-1] if named else lines[-1] if lines else type(e).__name__)[:500]


@contextlib.contextmanager
def connect(cfg: Config, address: str | None, temp_root: str | None = None):
    """Ray for this run: a cluster at `address` (joined, left alone at the end), else an embedded instance."""
    if address:
        import ray

        ray.init(address=address, runtime_env=worker_env(), log_to_driver=False, configure_logging=False)
        try:
            yield None
        finally:
            ray.shutdown()
        return
    local = LocalRay(cfg.fleet.num_cpus or os.cpu_count() or 1, cfg.fleet.object_store_mb, temp_root)
    try:
        yield local
    finally:
        local.close()
