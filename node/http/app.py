"""The dashboard's ASGI application (Starlette): the pages, their JSON, the event stream and ``/metrics``.

Read-only by construction: every route is GET (HEAD), nothing reaches a key or sends a transaction. The pages are
one HTML shell and a script served from this package (``static/``, nothing from the internet) that draws each
page from the JSON routes and re-reads them when ``/events`` says the facts changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from node.http.facts import fetch_command, job_detail, job_summary, node_rows, to_json
from node.http.local import local_facts, own_reject_reasons, peers_last_seen
from node.http.metrics import node_registry
from node.http.sse import change_stream

if TYPE_CHECKING:
    from node.http.feed import Feed
    from node.runtime import DtNode

STATIC = Path(__file__).parent / "static"
PAGES = ("/", "/jobs", "/jobs/{job_id:int}", "/nodes", "/node")


def build_app(node: DtNode, feed: Feed) -> Starlette:
    registry = node_registry(node, feed)
    ctx = node.ctx
    assert ctx is not None, "the dashboard starts after the node's context"

    def envelope(data: Any) -> JSONResponse:
        return JSONResponse({"block": feed.state.block, "version": feed.version, "data": to_json(data)})

    async def page(_request: Request) -> Response:
        return FileResponse(STATIC / "page.html", headers={"Cache-Control": "no-cache"})

    async def jobs(_request: Request) -> Response:
        return envelope([job_summary(j) for _, j in sorted(feed.state.jobs.items())])

    async def job(request: Request) -> Response:
        job_id = int(request.path_params["job_id"])
        state = feed.state
        info = state.jobs.get(job_id)
        if info is None:
            return JSONResponse({"error": f"job {job_id} is not on-chain (jobs: 1..{len(state.jobs)})"},
                                status_code=404)
        listen = ctx.net.listen_addrs()
        fetch = fetch_command(info, rpc=ctx.config.chain_rpc_url, contract=ctx.client.address,
                              bootstrap=listen[0] if listen else "")
        return envelope(job_detail(info, state.job_events(job_id), state.job_updates(job_id),
                                   state.job_rounds(job_id), feed.measurer.done, fetch=fetch,
                                   signed=state.job_signed_votes(job_id),
                                   own_reasons=own_reject_reasons(node, job_id)))

    async def nodes(_request: Request) -> Response:
        state = feed.state
        return envelope(node_rows(state.trainers, state.validators, state.events, peers_last_seen(node)))

    async def this_node(_request: Request) -> Response:
        return envelope(local_facts(node))

    async def events(request: Request) -> Response:
        return change_stream(request, feed)

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    routes = [Route(path, page) for path in PAGES] + [
        Route("/api/jobs", jobs),
        Route("/api/jobs/{job_id:int}", job),
        Route("/api/nodes", nodes),
        Route("/api/node", this_node),
        Route("/events", events),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)
