"""The web editor's HTTP API and its page (Starlette): each route turns a request into calls of the Workspace, the
editor core and the generation queue, and answers JSON (errors as {"error": message} with a 4xx status).

    GET  /                                  the page (static/index.html, app.js, app.css)
    GET  /api/status                        the model, the dataset, the queue
    POST /api/model                         {config, ckpt, data}: load another model
    POST /api/sessions                      {kind: animate|compose}: a new editor; its state
    GET  /api/sessions/{id}                 the state: marks, control frames, mode, message
    POST /api/sessions/{id}/image?name=F    the raw bytes of an image: animate it / add it to the composition
    POST /api/sessions/{id}/clip            {index, frame}: a frame of a dataset clip instead
    POST /api/sessions/{id}/pointer         {action: press|move|release, x, y} in image pixels
    POST /api/sessions/{id}/key             {key}: the mode keys of the original editors (c, m; n, v)
    POST /api/sessions/{id}/undo            take back the last write (a move or a paste)
    POST /api/sessions/{id}/clear           forget the controls, keep the images
    GET  /api/sessions/{id}/image.png       the picture the marks are drawn on
    GET  /api/sessions/{id}/controls.json   the controls file (docs/controls.md)
    POST /api/sessions/{id}/controls?name=F&num_frames=N   load a controls file (raw bytes)
    POST /api/sessions/{id}/generate        {num_frames, steps, gamma, seed}: queue a generation
    GET  /api/jobs/{job}                    its status, queue position, progress and files
    POST /api/jobs/{job}/cancel
    GET  /api/jobs/{job}/files/{name}       video.mp4, video.gif, strip.png, controls.json
"""
from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from demo.app.jobs import JobQueue
from demo.app.workspace import AppError, Settings, Workspace, mib, png_bytes, session_state
from lutils.errors import CageError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: what a finished generation offers for download, and its content type
JOB_FILES = {"video.mp4": "video/mp4", "video.gif": "image/gif", "strip.png": "image/png",
             "controls.json": "application/json"}
#: the mode keys the page may send (enter is the Generate button, which queues)
MODE_KEYS = ("c", "m", "n", "v")


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused (413) past `limit` bytes without reading the rest; kept in memory only."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise AppError(f"{what}: {mib(int(length))} is over the upload limit of {mib(limit)}", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise AppError(f"{what}: over the upload limit of {mib(limit)}", status=413)
    return bytes(body)


async def json_body(request: Request) -> dict:
    try:
        data = await request.json()
    except ValueError:
        raise AppError("the request body must be a JSON object") from None
    if not isinstance(data, dict):
        raise AppError("the request body must be a JSON object")
    return data


def _number(data: dict, key: str) -> float:
    try:
        value = float(data[key])
    except (KeyError, TypeError, ValueError):
        raise AppError(f"'{key}' must be a number, got {data.get(key)!r}") from None
    if not math.isfinite(value):
        raise AppError(f"'{key}' must be finite, got {value}")
    return value


def create_app(workspace: Workspace, jobs: JobQueue | None = None) -> Starlette:
    """The Starlette app serving `workspace`; `jobs` (default: a new queue) runs the generations."""
    jobs = jobs or JobQueue()

    def locked_state(session) -> dict:
        with session.lock:
            return session_state(session)

    async def state(session) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(locked_state, session))

    async def status(request: Request):
        waiting = sum(job.status in ("queued", "running") for job in list(jobs.jobs.values()))
        return JSONResponse({**workspace.status(), "jobs_active": waiting})

    async def load_model(request: Request):
        if workspace.public:
            raise AppError("this server is open beyond this machine: loading models named in the page is off; "
                           "restart it with --config and --ckpt", status=403)
        data = await json_body(request)
        if not data.get("config"):
            raise AppError("give a config file")
        await run_in_threadpool(workspace.load, str(data["config"]), data.get("ckpt") or None, data.get("data") or None)
        return JSONResponse(workspace.status())

    async def new_session(request: Request):
        data = await json_body(request)
        session = await run_in_threadpool(workspace.new_session, str(data.get("kind", "animate")))
        return await state(session)

    async def get_session(request: Request):
        return await state(workspace.session(request.path_params["session"]))

    def add_source(session, source) -> None:
        with session.lock:
            editor = session.editor
            if session.kind == "animate":
                editor.run(image=source.frame, show=False)
                editor.source = source.name
                session.sources = [source]
            else:
                source = workspace.distinct(session, source)
                editor.queue.append(source.frame)
                editor.next_image()
                editor.sources[-1] = source.name
                session.sources.append(source)

    async def upload_image(request: Request):
        session = workspace.session(request.path_params["session"])
        name = request.query_params.get("name", "image.png")
        data = await read_body(request, workspace.limits.upload_bytes, name)
        source = await run_in_threadpool(workspace.decode_upload, name, data)
        await run_in_threadpool(add_source, session, source)
        return await state(session)

    async def load_clip(request: Request):
        session = workspace.session(request.path_params["session"])
        data = await json_body(request)
        source = await run_in_threadpool(workspace.clip_frame, data.get("index"), data.get("frame", 0))
        await run_in_threadpool(add_source, session, source)
        return await state(session)

    # Editor calls run in the thread pool, never in the event loop: a key may compute features (n shows a clip), and
    # a session's lock may be held by an upload meanwhile.
    def send_pointer(session, data: dict) -> None:
        action = data.get("action")
        with session.lock:
            editor = session.editor
            if action == "release":
                editor.pointer_release()
            elif action in ("press", "move"):
                xy = (_number(data, "x"), _number(data, "y"))
                (editor.pointer_press if action == "press" else editor.pointer_move)(xy)
            else:
                raise AppError(f"pointer action must be press, move or release, got {action!r}")

    async def pointer(request: Request):
        session = workspace.session(request.path_params["session"])
        await run_in_threadpool(send_pointer, session, await json_body(request))
        return await state(session)

    def send_key(session, name: str) -> None:
        with session.lock:
            if name not in MODE_KEYS or not session.editor.key_press(name):
                keys = [k for k in MODE_KEYS if k in session.editor.KEYS]
                raise AppError(f"key {name!r} does nothing in the {session.kind} editor (keys: {', '.join(keys)})")

    async def key(request: Request):
        session = workspace.session(request.path_params["session"])
        await run_in_threadpool(send_key, session, str((await json_body(request)).get("key", "")))
        return await state(session)

    def clear_controls(session) -> None:
        from model.controls import Controls

        with session.lock:
            empty = Controls(session.editor.grid, 1)
            if session.kind == "animate":
                if session.sources:
                    session.editor.load_controls(empty, ["input"])
            else:
                session.editor.load_controls(empty, [s.frame for s in session.sources],
                                             [s.name for s in session.sources])

    def take_back(session) -> None:
        with session.lock:
            try:
                session.editor.undo()
            except RuntimeError as error:
                raise AppError(str(error)) from error

    async def undo(request: Request):
        session = workspace.session(request.path_params["session"])
        await run_in_threadpool(take_back, session)
        return await state(session)

    async def clear(request: Request):
        session = workspace.session(request.path_params["session"])
        await run_in_threadpool(clear_controls, session)
        return await state(session)

    def picture(session) -> bytes:
        with session.lock:
            image = session.editor.scene().image
        if image is None:
            raise AppError("no image loaded yet", status=404)
        return png_bytes(image)

    async def image(request: Request):
        session = workspace.session(request.path_params["session"])
        content = await run_in_threadpool(picture, session)
        return Response(content, media_type="image/png", headers={"Cache-Control": "no-store"})

    def controls_of(session) -> dict:
        with session.lock:
            return session.editor.controls_file(session.source_names())

    async def download_controls(request: Request):
        session = workspace.session(request.path_params["session"])
        content = await run_in_threadpool(controls_of, session)
        return JSONResponse(content, headers={"Content-Disposition": 'attachment; filename="controls.json"'})

    def apply_controls(session, data: bytes, name: str, num_frames: int) -> None:
        if session.kind == "animate" and not session.sources:
            raise AppError(f"{name}: load the image to animate first, then its controls")
        controls, sources = workspace.parse_controls(session, data, name, num_frames)
        with session.lock:
            if session.kind == "animate":
                names = ["input" if source is session.sources[0] else source.name for source in sources]
                try:
                    session.editor.load_controls(controls, names)
                except (ValueError, RuntimeError) as error:
                    raise AppError(f"{name}: {error}") from error
            else:
                session.editor.load_controls(controls, [s.frame for s in sources], [s.name for s in sources])
                session.sources = list(sources)

    async def upload_controls(request: Request):
        session = workspace.session(request.path_params["session"])
        name = request.query_params.get("name", "controls.json")
        num_frames = Settings.parse({"num_frames": request.query_params.get("num_frames")}).num_frames
        data = await read_body(request, workspace.limits.controls_bytes, name)
        await run_in_threadpool(apply_controls, session, data, name, num_frames)
        return await state(session)

    def prepare(session, settings: Settings) -> tuple:
        with session.lock:
            return workspace.prepare_generation(session, settings)

    async def generate(request: Request):
        session = workspace.session(request.path_params["session"])
        settings = Settings.parse(await json_body(request))
        work, details = await run_in_threadpool(prepare, session, settings)
        job = jobs.submit(session.id, work)
        return JSONResponse({**jobs.info(job), **details})

    def job_of(request: Request):
        job = jobs.get(request.path_params["job"])
        if job is None:
            raise AppError(f"no generation {request.path_params['job']!r}", status=404)
        return job

    async def job_status(request: Request):
        return JSONResponse(jobs.info(job_of(request)))

    async def cancel(request: Request):
        job = job_of(request)
        jobs.cancel(job)
        return JSONResponse(jobs.info(job))

    async def job_file(request: Request):
        job, name = job_of(request), request.path_params["name"]
        if job.status != "done" or name not in JOB_FILES:
            raise AppError(f"{name} is not available (generation {job.status}; files: {', '.join(JOB_FILES)})",
                           status=404)
        path = workspace.root / job.owner / job.result["folder"] / name
        if not path.is_file():
            raise AppError(f"{name} was not written (PyAV missing for mp4: download the gif)", status=404)
        download = "download" in request.query_params
        return FileResponse(path, media_type=JOB_FILES[name], filename=name if download else None,
                            content_disposition_type="attachment" if download else "inline")

    async def index(request: Request):
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def app_error(request: Request, error: Exception):
        status = error.status if isinstance(error, AppError) else 400
        return JSONResponse({"error": str(error)}, status_code=status)

    async def internal_error(request: Request, error: Exception):
        log.exception("web editor: %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(error).__name__}: {error}"}, status_code=500)

    session_path = "/api/sessions/{session}"
    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/api/status", status),
        Route("/api/model", load_model, methods=["POST"]),
        Route("/api/sessions", new_session, methods=["POST"]),
        Route(session_path, get_session),
        Route(session_path + "/image", upload_image, methods=["POST"]),
        Route(session_path + "/clip", load_clip, methods=["POST"]),
        Route(session_path + "/pointer", pointer, methods=["POST"]),
        Route(session_path + "/key", key, methods=["POST"]),
        Route(session_path + "/undo", undo, methods=["POST"]),
        Route(session_path + "/clear", clear, methods=["POST"]),
        Route(session_path + "/image.png", image),
        Route(session_path + "/controls.json", download_controls),
        Route(session_path + "/controls", upload_controls, methods=["POST"]),
        Route(session_path + "/generate", generate, methods=["POST"]),
        Route("/api/jobs/{job}", job_status),
        Route("/api/jobs/{job}/cancel", cancel, methods=["POST"]),
        Route("/api/jobs/{job}/files/{name}", job_file),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        jobs.close()

    app = Starlette(routes=routes, exception_handlers={CageError: app_error, Exception: internal_error},
                    lifespan=lifespan)
    app.state.workspace, app.state.jobs = workspace, jobs
    return app
