"""Commands that talk to a running server over gRPC: `search` and `health`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.cli.runner import EXIT_ERROR, EXIT_OK, EXIT_UNREACHABLE
from lookalike.core.search_defaults import DEFAULT_TOP_K

if TYPE_CHECKING:
    from lookalike.core.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `search` and `health`."""
    search = commands.add_parser("search", help="search the server with an image file")
    search.add_argument("image")
    search.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    search.add_argument("--filter", default="", help='e.g. label == "beach"')
    search.add_argument("--min-score", type=float, help="only hits scoring above this (cosine)")
    search.add_argument("--qe", type=int, metavar="N",
                        help="alpha-query expansion over N neighbours, 0: off (default: server's)")
    search.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                        help="re-rank by geometric verification of local features "
                             "(default: server's setting)")
    search.add_argument("--label", action="append", default=[],
                        help="only images with this label (repeat for any of several)")
    search.add_argument("--tag", action="append", default=[],
                        help="only images with this tag (repeat: all of them)")
    search.add_argument("--source-prefix", default="", help="only images whose source starts so")
    search.add_argument("--since", help="ingested at or after (YYYY-MM-DD, ISO time, unix s)")
    search.add_argument("--until", help="ingested before (YYYY-MM-DD, ISO time, unix s)")
    search.add_argument("--mode", choices=("ann", "hash_rerank", "routed"),
                        help="vector search mode (default: server's milvus.search_mode)")
    search.add_argument("--ef", type=int, help="HNSW search breadth")
    search.add_argument("--nprobe", type=int, help="IVF lists searched")
    search.add_argument("--rerank-factor", type=int,
                        help="re-score top_k x this many candidates with the float vectors")
    search.add_argument("--route-top-n", type=int, help="categories a routed search scans")
    search.add_argument("--address", help="server host:port (default: settings)")
    search.set_defaults(func=cmd_search)

    health = commands.add_parser("health", help="check that the server is serving")
    health.add_argument("--address", help="server host:port (default: settings)")
    health.add_argument("--timeout", type=float, default=2.0)
    health.set_defaults(func=cmd_health)


def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    """Search the server with an image file and print a table."""
    from lookalike.core.filters import build_filter
    from lookalike.services.client import ClientConfig

    data = Path(args.image).read_bytes()
    config = ClientConfig.from_settings(settings.client)
    filter_expr = build_filter(labels=args.label, tags=args.tag, source_prefix=args.source_prefix,
                               since=args.since, until=args.until, expression=args.filter)
    with replace(config, address=args.address or config.address).connect() as client:
        response = client.search(image=data, top_k=args.top_k, filter_expr=filter_expr,
                                 min_score=args.min_score, qe_n=args.qe, verify=args.verify,
                                 mode=args.mode, ef=args.ef, nprobe=args.nprobe,
                                 rerank_factor=args.rerank_factor, route_top_n=args.route_top_n)
    verified = any(hit.inliers is not None for hit in response.hits)
    print(f"{len(response.hits)} results in {response.took_ms:.1f} ms from {response.collection!r}")
    inliers_head = f"  {'inliers':>7}" if verified else ""
    print(f"{'rank':>4}  {'id':>20}  {'score':>6}{inliers_head}  {'label':<16}  source")
    for rank, hit in enumerate(response.hits, 1):
        inliers = f"  {hit.inliers or 0:>7}" if verified else ""
        print(f"{rank:>4}  {hit.id:>20}  {hit.score:6.3f}{inliers}  {hit.label:<16}  {hit.source}")
    return EXIT_OK


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when the server answers SERVING, 1 when it answers anything else, 2 when none
    answers (with why: connection refused, no answer, TLS on one side only)."""
    from lookalike.services.client import ClientConfig
    from lookalike.services.reachability import HealthStatus

    config = ClientConfig.from_settings(settings.client)
    address = args.address or config.address
    with replace(config, address=address, timeout_s=args.timeout).connect() as client:
        check = client.health()
    match check.status:
        case HealthStatus.SERVING:
            print(f"{address}: SERVING")
            return EXIT_OK
        case HealthStatus.NOT_SERVING:
            print(f"{address}: NOT_SERVING" + (f" ({check.detail})" if check.detail else ""))
            return EXIT_ERROR
    print(f"error: cannot reach {address}: {check.detail}", file=sys.stderr)
    return EXIT_UNREACHABLE
