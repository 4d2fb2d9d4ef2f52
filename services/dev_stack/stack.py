"""`dev run` from start to stop: plan, start the children, play the demo, report, wait for Ctrl-C, stop."""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from services.dev_stack import demo, report
from services.dev_stack.children import Child, LogHub
from services.dev_stack.model_plan import ModelMode, ModelPlan, plan_models
from services.dev_stack.pidfile import PidFile
from services.dev_stack.preflight import (
    LOOPBACK,
    RedisChoice,
    check_port,
    choose_redis,
    dev_tokens,
    is_loopback,
    metrics_ports,
    process_env,
    stack_env,
    write_env_file,
)
from services.dev_stack.supervisor import ChildFailed, StopRequested, Supervisor
from shared.embedded_redis import reachable
from shared.gallery_client import GalleryClient
from shared.redaction import redact_url
from shared.settings import Settings

SAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png")

DEMO_POLLING = re.compile(r'"GET /(healthz|api/photos/\d+|api/text_queries/\d+) HTTP')
"""Gallery access-log lines of the demo's own polling: kept in gallery.log, not echoed while it waits."""


@dataclass
class DevOptions:
    """Everything `mindsight dev run` can be told on its command line."""

    gallery_port: int = 5800
    embed_port: int = 8001
    metrics_port: int = 9100
    """First of the consecutive /metrics ports of the router and the workers; 0 turns them off."""
    embed_api: bool = True
    embedded_redis: bool = False
    single_process: bool = False
    exit_after_demo: bool = False
    echo_logs: bool = True
    models: ModelMode = ModelMode.AUTO
    samples: Path = Path("samples")
    var_dir: Path = Path("var")
    query: str = "a cat"
    demo_timeout_s: float = 600.0
    env_file: str = ".env"


def sample_photos(folder: Path) -> list[Path]:
    """The photos of the demo, sorted; a clear error when there are none."""
    photos = (
        sorted(p for p in folder.glob("*") if p.suffix.lower() in SAMPLE_SUFFIXES) if folder.is_dir() else []
    )
    if not photos:
        raise demo.DemoFailed(
            f"no sample photos ({', '.join(SAMPLE_SUFFIXES)}) in {folder}; pass --samples DIR"
        )
    return photos


def _short(path: Path) -> str:
    """`path` relative to the working directory when it lies under it (shorter to copy), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _program() -> str:
    """`mindsight` when that name already runs this installation, else the path of its script."""
    script = Path(sys.executable).with_name("mindsight")
    found = shutil.which("mindsight")
    if found and Path(found).resolve() == script.resolve():
        return "mindsight"
    return _short(script) if script.exists() else f"{sys.executable} -m mindsight"


class DevStack:
    """One run of the whole stack on this machine."""

    def __init__(self, settings: Settings, options: DevOptions, inherited_env: Mapping[str, str]) -> None:
        self.settings = settings
        self.opt = options
        self.var = options.var_dir.resolve()
        self.logs = LogHub(self.var / "logs", echo=options.echo_logs)
        self.inherited = dict(inherited_env)
        self.gallery_url = f"http://{LOOPBACK}:{options.gallery_port}"
        self.embed_url = f"http://{LOOPBACK}:{options.embed_port}" if options.embed_api else None
        self.metrics_ports = metrics_ports(options.metrics_port, options.single_process)
        self.demo_ok = False

    def run(self) -> int:
        """Exit status: 0 once the demo worked, 1 when something failed, 130 when stopped before that."""
        say = self.logs.say
        samples = sample_photos(self.opt.samples)
        pids = PidFile(self.var / "dev.pids")
        pids.refuse_if_running()
        check_port(self.opt.gallery_port, "gallery", "--gallery-port")
        if self.opt.embed_api:
            check_port(self.opt.embed_port, "embed-api", "--embed-port")
        for name, port in self.metrics_ports.items():
            check_port(port, f"{name} /metrics", "--metrics-port")
        redis = choose_redis(self.settings.redis.url, embedded=self.opt.embedded_redis)
        tokens = dev_tokens(self.settings)
        if not redis.embedded:
            say(f"Redis: using REDIS_URL={redact_url(redis.url)}")
            if not is_loopback(redis.url):
                say(
                    "  it is not on this machine: this stack's router will consume its queues. "
                    "Use --embedded-redis to keep off a shared Redis.",
                    fg="yellow",
                )
        plan = plan_models(self.settings, self.opt.models, self.var / "standin-models")
        self._announce_models(plan)
        overrides = {
            **stack_env(self.settings, redis.url, self.gallery_url, self.var / "gallery", tokens),
            **plan.env,
        }
        write_env_file(self.var / "dev.env", overrides)
        for name in tokens.generated:
            say(
                f"{name} is not set: generated a dev-only value (saved in {self.var / 'dev.env'})",
                fg="yellow",
            )
        where = "shown here with a [name] prefix and kept" if self.opt.echo_logs else "written"
        say(f"logs: {where} in {self.var / 'logs'}/<process>.log")
        env = process_env(self.inherited, self.settings, overrides)
        sup = Supervisor(self.logs, Path.cwd(), env, self.opt.env_file, pids)
        with sup.signals_stop():
            try:
                self._start(sup, redis, plan)
                self._demo(sup, plan, samples, tokens.access)
                if self.opt.exit_after_demo:
                    return 0
                say("\nRunning. Press Ctrl-C to stop everything.", bold=True)
                while True:
                    sup.sleep(3600)
            except StopRequested:
                return 0 if self.demo_ok else 130
            except ChildFailed as exc:
                self._explain_failure(str(exc), [exc.child])
                return 1
            except demo.DemoFailed as exc:
                self._explain_failure(str(exc), sup.services)
                return 1
            finally:
                names = [c.name for c in sup.services + sup.last if c.running()]
                say(f"stopping {', '.join(names) or 'nothing (no process left)'}")
                killed = sup.stop_all()
                say("stopped" + (f" (had to kill {', '.join(c.name for c in killed)})" if killed else ""))

    def _announce_models(self, plan: ModelPlan) -> None:
        for note in plan.notes:
            self.logs.say(note)
        if plan.standins:
            self.logs.say("\n".join(report.standin_banner(plan.standins)), fg="red", bold=True)

    def _start(self, sup: Supervisor, redis: RedisChoice, plan: ModelPlan) -> None:
        if redis.embedded:
            data = self.var / "redis"
            configured = redact_url(self.settings.redis.url)
            self.logs.say(
                f"Redis: nothing answers at REDIS_URL={configured}; starting an embedded "
                f"redis-server at {redis.url} (data in {data})",
                fg="yellow",
            )
            sup.start("redis", ["dev", "redis", "--dir", str(data), "--port", str(redis.port)], last=True)
            while not reachable(redis.url, timeout=0.2):
                sup.sleep(0.1)
        where = [
            "--host",
            LOOPBACK,
            "--port",
            str(self.opt.gallery_port),
            "--root",
            str(self.var / "gallery"),
        ]
        sup.start("gallery", ["serve", "gallery-dev", *where])
        sup.start("router", ["router"], env=self._metrics_env("router"))
        caps = ["clip", *(["caption"] if plan.captions else []), *(["face"] if plan.faces else []), "text"]
        if self.opt.single_process:
            args = ["worker", "all"] if len(caps) == 4 else ["worker", "clip", "--also", ",".join(caps[1:])]
            sup.start("worker-all", args, env=self._metrics_env("worker-all"))
        else:
            for cap in caps:
                sup.start(f"worker-{cap}", ["worker", cap], env=self._metrics_env(f"worker-{cap}"))
        if self.embed_url:
            sup.start(
                "embed-api", ["serve", "embed-api", "--host", LOOPBACK, "--port", str(self.opt.embed_port)]
            )

    def _metrics_env(self, name: str) -> dict[str, str]:
        port = self.metrics_ports.get(name)
        return {"MINDSIGHT_METRICS_PORT": str(port)} if port else {}

    def _demo(self, sup: Supervisor, plan: ModelPlan, samples: list[Path], access: str) -> None:
        deadline = time.monotonic() + self.opt.demo_timeout_s
        gallery_settings = self.settings.gallery.model_copy(
            update={"api_base_url": self.gallery_url, "retries": 0, "access_token": SecretStr(access)}
        )
        gallery = GalleryClient(gallery_settings, internal=False)
        want = demo.Expectations(plan.clip_labels, plan.captions, plan.faces)
        self.logs.muted = DEMO_POLLING  # the gallery's access log would echo every poll below
        try:
            demo.wait_gallery(sup, gallery, deadline)
            tasks = "clip,face" if plan.faces else "clip"
            photos, text = demo.enqueue_samples(sup, samples, self.opt.query, tasks, timeout=120)
            demo.wait_for_results(sup, gallery, photos, text, want, deadline, self.logs.say)
        finally:
            self.logs.muted = None
            gallery.close()
        headers = self._embed_headers()
        if self.embed_url:
            demo.wait_embed_api(sup, self.embed_url, headers, deadline)
            demo.embed_with_api(self.embed_url, headers, text)
        # COLUMNS: rich draws its table for a terminal this wide even though its output is a pipe.
        search_args = ["search", self.opt.query, "-n", str(len(samples))]
        search = sup.run("search", search_args, timeout=180, echo=False, COLUMNS="140")
        self.demo_ok = True
        started = {c.name for c in sup.services}
        metrics = {n: f"http://{LOOPBACK}:{p}/metrics" for n, p in self.metrics_ports.items() if n in started}
        self._report(plan, photos, text, search.output, access, metrics)

    def _embed_headers(self) -> dict[str, str]:
        token = self.settings.embed_api.token.get_secret_value().strip()
        return {"authorization": f"Bearer {token}"} if token else {}

    def _report(
        self,
        plan: ModelPlan,
        photos: list[demo.PhotoResult],
        text: demo.TextResult,
        search: list[str],
        access: str,
        metrics: dict[str, str],
    ) -> None:
        lines = ["", "=" * 100, f"What the workers posted to the gallery ({len(photos)} sample photos):", ""]
        for photo in photos:
            lines += [*report.photo_table(photo), ""]
        lines += [*report.text_lines(text), "", f'$ mindsight search "{self.opt.query}"', *search, ""]
        endpoints = report.Endpoints(
            self.gallery_url,
            self.embed_url,
            access,
            _short(self.var / "dev.env"),
            f"{_short(self.var / 'logs')}/*.log",
            embed_token=bool(self._embed_headers()),
            program=_program(),
            metrics=metrics,
        )
        lines += [*report.try_it(endpoints, self.opt.query), "=" * 100]
        with self.logs.block():
            self.logs.say("\n".join(lines))
            if plan.standins:
                self.logs.say("\n".join(report.standin_banner(plan.standins)), fg="red", bold=True)

    def _explain_failure(self, message: str, suspects: Sequence[Child]) -> None:
        with self.logs.block():
            self.logs.say(f"\ndev run failed: {message}", fg="red", bold=True)
            for child in suspects:
                if child.lines:
                    self.logs.say(f"--- last lines of {child.name} ({self.logs.path(child.name)}):", fg="red")
                    self.logs.say("\n".join(child.tail(15)))
