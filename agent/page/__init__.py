"""The live lane page and Prometheus metrics, served by the agent (docs/page.md).

An adapter like the others: it imports no other adapter. The composition root fills a
:class:`~agent.page.feed.PageFeed` from the engine thread (live crossings, stored crossings, tag
reads) and gives it the status document and the camera snapshot as providers;
:mod:`agent.page.server` serves them over HTTP(S) on a thread of its own.

Modules: ``feed`` (engine thread → clients, never blocking), ``views`` (what the page shows,
cards masked), ``server`` (Starlette + uvicorn, Server-Sent Events), ``metrics`` (Prometheus),
``auth`` (credential and TLS), ``lane_page`` (started from the ``[page]`` config), ``client``
(``lane-agent status``). Nothing is imported here, so the CLI can load ``client`` without the
web framework.
"""
