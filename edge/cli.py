"""`turnout edge run | check | snapshot | calibrate | reference`.

User errors (bad config, missing model, unreadable video, unknown broker host) print one clear message
and exit with code 2. Heavy imports (OpenCV, onnxruntime) happen inside the commands.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from edge.config import CameraConfig, EdgeConfig
    from edge.detector import Detector
    from edge.zones import Layout

app = typer.Typer(no_args_is_help=True)
log = logging.getLogger("turnout.edge")

ConfigOpt = typer.Option(..., "--config", "-c", help="Edge YAML config (see deploy/edge-vtest.yaml).")
ModelOpt = typer.Option(None, "--model", "-m", help="Model name or .onnx path (default: config, TURNOUT_MODEL, models/).")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error for the operator and exit (2 = the user's input is wrong)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _load(config: Path) -> EdgeConfig:
    from edge.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        fail(str(exc))


def _detector(cfg: EdgeConfig, model: str | None) -> Detector:
    from edge.detector import Detector, ModelError
    from turnout.paths import ModelNotFoundError, resolve_model

    try:
        path = resolve_model(model or cfg.model.path)
        return Detector.from_config(path, cfg.model)
    except (ModelNotFoundError, ModelError) as exc:
        fail(str(exc))


def _check_broker(cfg: EdgeConfig, strict: bool) -> None:
    """Unknown host: a config error (exit 2). Refused/timeout: exit 2 if strict, else warn and spool."""
    import socket

    from edge.publisher import BrokerUnreachable, check_reachable

    try:
        socket.getaddrinfo(cfg.mqtt.host, cfg.mqtt.port)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_NONAME:  # the name does not exist: a typo in the config
            fail(f"MQTT broker host {cfg.mqtt.host}:{cfg.mqtt.port} does not exist ({exc}); check mqtt.url")
        # a resolver that is not up yet (boot, network outage): paho keeps retrying, counts are spooled
    try:
        check_reachable(cfg.mqtt, timeout=3.0)
    except BrokerUnreachable as exc:
        if strict:
            fail(str(exc))
        typer.secho(
            f"warning: {exc}. Counts are kept in the on-disk queue ({cfg.state_dir}) and sent when it is back.",
            err=True,
            fg=typer.colors.YELLOW,
        )


def _check_decoders(config: Path, cfg: EdgeConfig) -> None:
    """A camera set to a hardware decoder this box lacks is a one-line error (exit 2); `auto` falls back."""
    from edge.sources import uses_pyav

    for cam in cfg.cameras:
        if cam.decode in ("auto", "cpu") or not uses_pyav(cam):
            continue
        from edge.decode import DecoderUnavailable, resolve

        try:
            resolve(cam.decode)
        except DecoderUnavailable as exc:
            fail(f"{config}: camera {cam.id}: {exc}")


@app.command()
def run(
    config: Path = ConfigOpt,
    model: str = ModelOpt,
    duration: float = typer.Option(None, "--duration", help="Stop after this many seconds."),
    require_broker: bool = typer.Option(False, help="Exit (code 2) if the broker is unreachable at start."),
) -> None:
    """Count people on every camera and publish seat occupancy over MQTT until stopped."""
    from edge.config import ConfigError
    from edge.pipeline import EdgeRunner
    from edge.sources import SourceError, probe

    cfg = _load(config)
    _check_decoders(config, cfg)
    detector = _detector(cfg, model)
    for cam in cfg.cameras:
        if cam.source_kind == "file":
            try:
                probe(cam)
            except SourceError as exc:
                fail(str(exc))
    try:
        _check_broker(cfg, strict=require_broker)
        runner = EdgeRunner(cfg, detector)
    except (ConfigError, OSError) as exc:  # password_env unset, TLS file missing, state_dir not writable ...
        fail(f"{config}: {exc}")

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        runner.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info(
        "edge %s/%s: %d camera(s), model %s on %s, broker %s",
        cfg.venue,
        cfg.device,
        len(cfg.cameras),
        detector.name,
        detector.runtime,
        cfg.mqtt.url,
    )
    raise typer.Exit(runner.run(duration))


@app.command()
def check(config: Path = ConfigOpt, model: str = ModelOpt) -> None:
    """Validate the config, open every source, load the model and reach the broker; print a summary."""
    from edge.sources import SourceError, probe
    from edge.zones import Layout

    cfg = _load(config)
    detector = _detector(cfg, model)
    typer.echo(f"config   {config}: venue {cfg.venue}, device {cfg.device}, {len(cfg.cameras)} camera(s)")
    typer.echo(
        f"model    {detector.name} input {detector.input_size[1]}x{detector.input_size[0]} on {detector.runtime}"
    )
    if detector.degraded:
        typer.secho(f"         degraded: {detector.degraded}", fg=typer.colors.YELLOW)
    problems = 0
    for cam in cfg.cameras:
        try:
            image, fps = probe(cam)
        except SourceError as exc:
            typer.secho(f"camera   {cam.id}: FAILED {exc}", fg=typer.colors.RED)
            problems += 1
            continue
        h, w = image.shape[:2]
        layout = Layout(cam, w, h)
        counts = layout.count(detector.detect(image, cam.detect))
        seats = sum(s.seats for s in cam.sections)
        people = sum(t.people for t in counts.values())
        typer.echo(
            f"camera   {cam.id}: {cam.source_kind} {w}x{h} @ {fps:.1f} fps, analyse {cam.analysis_fps} fps, "
            f"{len(cam.sections)} sections / {seats} seats, mode {cam.detect.mode}, "
            f"{people} people in sections on the first frame ({detector.last_timing.get('inference', 0):.0f} ms)"
        )
        decode = _decode_line(cam)
        typer.echo(f"         decode: {decode}")
        problems += decode.startswith("FAILED")
        cal = cam.calibration
        typer.echo(
            f"         calibration: bias {cal.bias:g} spread {cal.spread:g} over {cal.frames} frame(s)"
            + (f", measured {cal.at:%Y-%m-%d}" if cal.at else "")
            if cal
            else "         calibration: none (the server assumes +-25 %; run `turnout edge calibrate`)"
        )
        typer.echo(f"         reference: {_reference_line(cfg, cam, layout)}")
    from edge.config import ConfigError
    from edge.publisher import BrokerUnreachable, check_reachable

    try:
        check_reachable(cfg.mqtt, timeout=3.0)
        typer.echo(f"broker   {cfg.mqtt.url}: reachable")
    except (BrokerUnreachable, ConfigError, OSError) as exc:
        typer.secho(f"broker   FAILED {exc}", fg=typer.colors.RED)
        problems += 1
    if problems:
        fail(f"{problems} problem(s) found")
    typer.secho("ok", fg=typer.colors.GREEN)


def _reference_line(cfg: EdgeConfig, cam: CameraConfig, layout: Layout) -> str:
    """The camera's empty-seat reference, for `edge check`."""
    from edge.seatref import load_reference

    polygons = len(layout.seat_polygons_px())
    ref = load_reference(cfg.state_dir, cam.id)
    auto = f"; daily capture at {cam.reference.capture_at}" if cam.reference.capture_at else ""
    if ref is None:
        return f"none (detection only; `turnout edge reference` captures the empty venue){auto}"
    used = f"{polygons} seat polygon(s), mode {cam.reference.mode}" if polygons else "unused: no seat polygons"
    return f"captured {ref.captured_at:%Y-%m-%d %H:%M} UTC from {ref.frames} frame(s); {used}{auto}"


def _decode_line(cam: CameraConfig) -> str:
    """How the camera's video will be decoded, for `edge check`."""
    from edge.sources import uses_pyav

    if not uses_pyav(cam):
        return "OpenCV (every frame demuxed, analysed frames decoded)"
    from edge.decode import DecoderUnavailable, resolve

    try:
        kind, why = resolve(cam.decode)
    except DecoderUnavailable as exc:
        return f"FAILED {exc}"
    keys = "keyframes only when they come often enough, else every frame" if cam.keyframe_only else "every frame"
    size = f"scaled to {cam.decode_side} px" if cam.decode_side else "native size"
    return f"{kind}{f' ({why})' if why else ''}; {keys}; {size}"


def _frames_for(cam: CameraConfig, count: int) -> list:
    """`count` frames spread over a video file, or consecutive analysis frames of a stream."""
    import threading

    import cv2

    from edge.sources import FrameSource, SourceError, open_capture

    if cam.source_kind == "file":
        cap = open_capture(cam)
        try:
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 1
            frames = []
            step = max(1, total // count)
            for i in range(0, total, step):
                cap.set(cv2.CAP_PROP_POS_FRAMES, i)
                ok, img = cap.read()
                if ok:
                    frames.append(img)
                if len(frames) >= count:
                    break
        finally:
            cap.release()
    else:
        stop = threading.Event()
        frames = []
        for frame in FrameSource(cam, stop, scale=False).frames():  # calibration draws on native pixels
            frames.append(frame.image)
            if len(frames) >= count:
                stop.set()
                break
    if not frames:
        raise SourceError(f"camera {cam.id}: no frame could be read from {cam.source}")
    return frames


@app.command()
def snapshot(
    config: Path = ConfigOpt,
    camera: str = typer.Option(..., "--camera", help="Camera id."),
    out: Path = typer.Option(..., "--out", help="Output JPEG/PNG file."),
    model: str = ModelOpt,
    detections: bool = typer.Option(True, help="Draw person boxes too."),
) -> None:
    """Save one frame with sections, seats and detections drawn on it (for drawing zones)."""
    import cv2

    from edge.config import ConfigError
    from edge.overlay import draw_overlay
    from edge.sources import SourceError
    from edge.zones import Layout

    cfg = _load(config)
    try:
        cam = cfg.camera(camera)
        image = _frames_for(cam, 1)[0]
    except (ConfigError, SourceError) as exc:
        fail(str(exc))
    dets = _detector(cfg, model).detect(image, cam.detect) if detections else None
    tallies = Layout(cam, image.shape[1], image.shape[0]).count(dets) if dets is not None else None
    if not cv2.imwrite(str(out), draw_overlay(image, cam, dets, tallies)):
        fail(f"cannot write image {out} (check the folder exists and the extension is .jpg or .png)")
    typer.echo(f"wrote {out} ({image.shape[1]}x{image.shape[0]})")


@app.command()
def calibrate(
    config: Path = ConfigOpt,
    camera: str = typer.Option(..., "--camera", help="Camera id."),
    count: int = typer.Option(None, "--count", min=0, help="People you counted by hand in the sections."),
    points: Path = typer.Option(None, "--points", help="JSON/CSV of head points clicked on a snapshot."),
    frames: int = typer.Option(8, "--frames", min=1, max=200, help="Frames sampled from the source."),
    model: str = ModelOpt,
    write: bool = typer.Option(True, help="Write the best setting and its calibration into the config file."),
) -> None:
    """Search threshold, tile size and scale so this camera's count matches a manual count (on the even
    frames; a pick that worsens the odd, check frames is refused with both errors); measure the chosen
    setting's counting error (bias, spread) and write both into the camera's config."""
    from edge.calibrate import format_table, load_points, search
    from edge.config import ConfigError
    from edge.sources import SourceError

    if (count is None) == (points is None):
        fail("give exactly one of --count N or --points FILE")
    cfg = _load(config)
    try:
        cam = cfg.camera(camera)
        sample = _frames_for(cam, frames)
        target = count if count is not None else load_points(points)
    except (ConfigError, SourceError, ValueError, OSError) as exc:
        fail(str(exc))
    detector = _detector(cfg, model)
    result = search(detector, sample, cam, target)
    typer.echo(format_table(result))
    typer.echo(result.verdict())
    typer.echo(f"error before: {result.error_before:.2f}  after: {result.error_after:.2f} (mean |count - target|)")
    try:
        calibration = result.calibration()
    except ValueError as exc:
        calibration = None
        typer.secho(f"warning: no count calibration: {exc}", err=True, fg=typer.colors.YELLOW)
    else:
        typer.echo(
            f"calibration: bias {calibration.bias:.4f} spread {calibration.spread:.4f} over {calibration.frames} "
            f"frame(s) (count / true count of the chosen setting)"
        )
    if not write:
        return
    detect = _changed(cam.detect.model_dump(mode="json"), result.best.model_dump(mode="json"))
    if calibration is None and detect is None:
        typer.echo("current setting is already the best found; config unchanged")
        return
    cal = calibration.model_dump(mode="json", exclude_none=True) if calibration is not None else None
    _write_camera(config, camera, detect=detect, calibration=cal)
    if detect is not None:
        typer.echo(f"updated cameras[{camera}].detect in {config}")
    else:
        typer.echo("current setting is already the best found; detect unchanged")
    if cal is not None:
        typer.echo(f"updated cameras[{camera}].calibration in {config}")
    elif cam.calibration is not None:
        typer.echo(f"removed the stale cameras[{camera}].calibration from {config} (detection setting changed)")


@app.command()
def reference(
    config: Path = ConfigOpt,
    camera: str = typer.Option(..., "--camera", help="Camera id."),
    out: Path = typer.Option(None, "--out", help="Also write the reference image here (to look at it)."),
    model: str = ModelOpt,
) -> None:
    """Capture the empty venue as this camera's empty-seat reference (median of `reference.capture_frames`
    frames), stored in the device state folder; refused (exit 2) when people are in it, the previous one kept."""
    import cv2

    from edge.config import ConfigError
    from edge.seatref import ReferenceRefused, capture, load_reference, save_reference
    from edge.sources import SourceError
    from edge.zones import Layout

    cfg = _load(config)
    try:
        cam = cfg.camera(camera)
        sample = _frames_for(cam, cam.reference.capture_frames)
    except (ConfigError, SourceError) as exc:
        fail(str(exc))
    detector = _detector(cfg, model)
    previous = load_reference(cfg.state_dir, cam.id)
    try:
        ref = capture(sample, lambda image: detector.detect(image, cam.detect), cam, previous)
        path = save_reference(cfg.state_dir, cam.id, ref)
    except ReferenceRefused as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot store the reference in {cfg.state_dir}: {exc}")
    if out is not None and not cv2.imwrite(str(out), ref.image):
        fail(f"cannot write image {out} (check the folder exists and the extension is .jpg or .png)")
    h, w = ref.image.shape[:2]
    polygons = len(Layout(cam, w, h).seat_polygons_px())
    typer.echo(
        f"reference for camera {cam.id}: {w}x{h}, median of {ref.frames} frame(s), {ref.people} people in the "
        f"sections; stored in {path}"
    )
    if polygons:
        typer.echo(f"{polygons} seat polygon(s) will be scored against it (reference.mode: {cam.reference.mode})")
    else:
        typer.secho(
            "warning: this camera has no seat polygons (seat_map with `polygon`): the reference is stored but unused",
            err=True,
            fg=typer.colors.YELLOW,
        )


def _changed(old: dict, new: dict) -> dict | None:
    """The fields of `new` that differ from `old` (nested), or None when nothing changed."""
    out = {}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            sub = _changed(old[key], value)
            if sub:
                out[key] = sub
        elif old.get(key) != value:
            out[key] = value
    return out or None


def _merge(target: dict, changes: dict) -> None:
    """Set only the changed fields in the YAML mapping, so untouched lines keep their comments."""
    from ruamel.yaml.comments import CommentedMap

    for key, value in changes.items():
        if isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = CommentedMap()
            _merge(target[key], value)
        else:
            target[key] = value


def _write_camera(path: Path, camera_id: str, *, detect: dict | None, calibration: dict | None) -> None:
    """Replace one camera's `detect` block (when given) and set its `calibration` (None: remove it), keeping
    the file's comments and layout (ruamel.yaml)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)  # the style of deploy/*.yaml: list items indented under keys
    yaml.width = 4096
    data = yaml.load(path.read_text())
    for cam in data["cameras"]:
        if cam["id"] != camera_id:
            continue
        if detect is not None:
            _merge(cam.setdefault("detect", CommentedMap()), detect)
        if calibration is None:
            cam.pop("calibration", None)
            continue
        new = "calibration" not in cam
        cam["calibration"] = CommentedMap(calibration)
        if new:
            cam.yaml_add_eol_comment("measured by `turnout edge calibrate`: count / true count", "calibration")
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as fh:
        yaml.dump(data, fh)
    tmp.replace(path)
