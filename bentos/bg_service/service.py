"""BentoML service: a thin HTTP layer over bg_platform.serving (all logic and checks live there).

Base model: the BentoML model store ("bg-base:latest", imported by `bgp serve-import-base`), or
the folder in BGP_BASE_DIR for local development. Every other setting: env BGP_* (see
bg_platform/serving/config.py). Heavy imports happen in __init__, in the worker process.
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
from fastapi import FastAPI
from starlette.responses import JSONResponse, Response

from bg_platform.serving.config import ServingConfig
from bg_platform.serving.limits import BodyLimit, body_limit

BASE_MODEL = os.environ.get("BGP_BASE_MODEL", "bg-base:latest")
routes = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)  # GET /brands, GET /categories


def _respond(reply) -> Response:
    if reply.media_type == "application/json":
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)
    return Response(reply.body, status_code=reply.status, headers=reply.headers, media_type=reply.media_type)


@bentoml.service(
    name="bg-service",
    workers=1,  # one base model per process; concurrency comes from batching inside it
    threads=32,  # requests wait in threads while the model thread batches them
    traffic={"timeout": 600, "max_concurrency": 64},
    envs=[{"name": "HF_HUB_OFFLINE", "value": "1"}],
    labels={"project": "bg-platform"},
)
@bentoml.asgi_app(routes, path="/")
class BgService:
    if not os.environ.get("BGP_BASE_DIR"):  # referenced only when used, so local dev needs no model store
        base = bentoml.models.BentoModel(BASE_MODEL)

    def __init__(self) -> None:
        from bg_platform.serving import Api, Engine

        base_dir = os.environ.get("BGP_BASE_DIR") or self.base.path
        self.engine = Engine(ServingConfig.from_env(base_dir=base_dir))
        self.api = Api(self.engine)

    def __is_ready__(self) -> bool:
        return self.engine.ready

    @bentoml.on_shutdown
    def close(self) -> None:
        self.engine.close()

    # Uploads are `Path = None`: BentoML 1.4.40 fails on `Optional[Path]` (unhashable FileSchema in a
    # Union) and does not treat `Path | None` as a file; a missing file reaches bg_platform.serving,
    # which answers 400 naming the field.
    @bentoml.api
    def generate(
        self, image: Path = None, mask: Path = None, category: str | None = None,
        brand: str | None = None, seed: int | None = None, num_images: int | None = None,
        steps: int | None = None, guidance: float | None = None,
    ) -> dict:
        return _respond(self.api.generate(image=image, mask=mask, category=category, brand=brand, seed=seed,
                                          num_images=num_images, steps=steps, guidance=guidance))

    @bentoml.api
    def generate_png(
        self, image: Path = None, mask: Path = None, category: str | None = None,
        brand: str | None = None, seed: int | None = None, steps: int | None = None, guidance: float | None = None,
    ) -> Path:
        return _respond(self.api.generate_png(image=image, mask=mask, category=category, brand=brand, seed=seed,
                                              steps=steps, guidance=guidance))

    @bentoml.api(route="/brands")
    def brands(self) -> dict:
        return _respond(self.api.brands())

    @bentoml.api(route="/categories")
    def categories(self) -> dict:
        return _respond(self.api.categories())

    @bentoml.api(route="/reload")
    def reload(self, ctx: bentoml.Context) -> dict:
        reply = self.api.reload(ctx.request.headers.get("authorization"))
        ctx.response.status_code = reply.status  # with a ctx parameter BentoML takes the status from ctx
        return _respond(reply)

    @routes.get("/brands")
    def get_brands(self) -> Response:
        return _respond(self.api.brands())

    @routes.get("/categories")
    def get_categories(self) -> Response:
        return _respond(self.api.categories())


BgService.add_asgi_middleware(BodyLimit, max_bytes=body_limit(ServingConfig.env_value("max_upload_bytes")))
