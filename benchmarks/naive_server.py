"""The servers the serving benchmark compares aideploy's with, and a launcher for all three.

Started by ``benchmarks/serving.py`` as child processes, each on its own loopback port:

- ``naive``: the usual tutorial pattern, FastAPI + ONNX Runtime with a pydantic
  request model (``{"data": [[...784 floats]]}``) and one ``session.run`` per request.
- ``echo``: a bare JSON echo route on the same stack (FastAPI + uvicorn): it answers
  the request body unchanged. No server on this stack answers faster: the HTTP limit.
- ``echo-json``: the HTTP+JSON limit of aideploy's own request path: the same FastAPI
  subclass and direct dispatch as its inference routes, its body reader, and orjson
  parsing the body and serialising it back.
- ``aideploy``: ``aideploy.serve.run`` on a model repository (what ``aideploy serve`` runs),
  with the ONNX Runtime thread count given here.

All three run uvicorn with :data:`aideploy.serve.app.UVICORN_OPTIONS` (the options
``aideploy serve`` uses) and the same ONNX Runtime threads, so only the request path differs.

Command: ``python benchmarks/naive_server.py KIND --port P (--model M.onnx | --repo DIR) [--threads 1]``.
"""


import argparse
import sys
from typing import Any


def naive_app(model_path: str, threads: int) -> Any:
    """FastAPI + ONNX Runtime as most tutorials write it: pydantic in, ``session.run`` per request, JSON out."""
    import numpy as np
    import onnxruntime
    from fastapi import FastAPI
    from pydantic import BaseModel

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    class PredictRequest(BaseModel):
        data: list[list[float]]

    class PredictResponse(BaseModel):
        predictions: list[list[float]]

    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/predict", response_model=PredictResponse)
    def predict(request: PredictRequest) -> PredictResponse:
        x = np.asarray(request.data, dtype=np.float32)
        (probabilities,) = session.run(None, {input_name: x})
        return PredictResponse(predictions=probabilities.tolist())

    return app


def echo_app() -> Any:
    """A route that answers a JSON body with itself: the HTTP stack and nothing else."""
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import Response

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")

    return app


def echo_json_app() -> Any:
    """A JSON echo as lean as aideploy's inference routes: parse the body, answer it as JSON.

    The same request path as ``aideploy serve``'s ``infer`` (its FastAPI subclass that
    dispatches hot POST routes directly, its body reader, orjson both ways), minus the
    model: the HTTP+JSON limit of that path.
    """
    import orjson
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from aideploy.serve.app import _InferenceFastPathApp
    from aideploy.serve.server import read_body

    async def echo(request: Request) -> Response:
        payload = orjson.loads(await read_body(request, 16 * 1024 * 1024))
        return Response(orjson.dumps(payload), media_type="application/json")

    app = _InferenceFastPathApp()

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ready": True}

    route = Route("/echo-json", echo, methods=["POST"])
    app.router.routes.append(route)
    app.set_hot_routes([route])
    return app


def main(argv: list[str] | None = None) -> int:
    """Run one of the servers until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("naive", "echo", "echo-json", "aideploy"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", help="the .onnx file (naive)")
    parser.add_argument("--repo", help="the model repository (aideploy)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default: 1)")
    parser.add_argument("--inline-below-ms", type=float, default=None, help="aideploy's ServerSettings field")
    args = parser.parse_args(argv)

    from aideploy.serve.app import UVICORN_OPTIONS

    if args.kind == "aideploy":
        from aideploy.serve import ServerSettings, run

        settings = ServerSettings(num_threads=args.threads)
        if args.inline_below_ms is not None:
            settings = ServerSettings(num_threads=args.threads, inline_below_ms=args.inline_below_ms)
        run(args.repo, host="127.0.0.1", port=args.port, settings=settings)
        return 0
    import uvicorn

    apps = {"naive": lambda: naive_app(args.model, args.threads), "echo": echo_app, "echo-json": echo_json_app}
    app = apps[args.kind]()
    uvicorn.run(app, host="127.0.0.1", port=args.port, **UVICORN_OPTIONS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
