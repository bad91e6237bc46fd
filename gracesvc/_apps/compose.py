# -*- test-case-name: tests.unit.apps.test_compose -*-
"""
The root resource for any application gracesvc serves, the user's or its
demo: gracesvc's own C{/healthz}, C{/readyz} and C{/metrics} next to it,
everything else the application's, each request labelled with its route
for the metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from klein.interfaces import IKleinRequest
from klein.resource import KleinResource
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from gracesvc._core.drain import Drain
from gracesvc._metrics.registry import OTHER_ROUTE, Metrics, MetricsResource, labelRoute


def answerJSON(request: IRequest, code: int, body: dict[str, str]) -> bytes:
    """
    Answer C{request} with C{body} as JSON and status C{code}.

    @return: the response body, for a resource's C{render} to return.
    """
    payload = json.dumps(body).encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % (len(payload),))
    return payload


def renderHealthz(request: IRequest) -> bytes:
    """
    200 while the process is alive, draining or not: a liveness probe must
    not restart an instance that is shutting down on purpose.
    """
    return answerJSON(request, 200, {"status": "ok"})


def renderReadyz(
    request: IRequest, drain: Drain, ready: Callable[[], bool] | None = None
) -> bytes:
    """
    200 while serving, 503 from the first stop signal on, so that load
    balancers take the instance out of rotation; 503 too while the
    application is not ready (an ASGI application's lifespan startup).
    """
    if drain.draining:
        return answerJSON(request, 503, {"status": "draining"})
    if ready is not None and not ready():
        return answerJSON(request, 503, {"status": "starting"})
    return answerJSON(request, 200, {"status": "ready"})


class _Probe(Resource):
    """
    A probe: C{GET} (and C{HEAD}) only, anything else a 405 that says so.
    """

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        if request.method in (b"GET", b"HEAD"):
            body: bytes = super().render(request)
            return body
        request.setResponseCode(405)
        request.setHeader(b"Allow", b"GET, HEAD")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"Method Not Allowed\n"


class _Healthz(_Probe):
    def render_GET(self, request: IRequest) -> bytes:
        return renderHealthz(request)


class _Readyz(_Probe):
    def __init__(self, drain: Drain, ready: Callable[[], bool] | None) -> None:
        super().__init__()
        self.drain = drain
        self.ready = ready

    def render_GET(self, request: IRequest) -> bytes:
        return renderReadyz(request, self.drain, self.ready)


def kleinRoute(request: IRequest) -> str:
    """
    Klein keeps the URL map it bound for the request on the request
    (C{IKleinRequest(request).mapper}) but not the rule it matched: it is
    matched again, a few microseconds.

    @return: the route a Klein application matched for C{request}: its
        rule (C{/users/<int:id>}), under the path the application is
        mounted at; L{OTHER_ROUTE} if it matched none.
    """
    mapper = getattr(IKleinRequest(request), "mapper", None)
    if mapper is None:
        return OTHER_ROUTE
    try:
        rule, _ = mapper.match(return_rule=True)
    except Exception:
        # Werkzeug's NotFound, MethodNotAllowed, RequestRedirect.
        return OTHER_ROUTE
    return str(mapper.script_name).rstrip("/") + str(rule.rule)


class ResourceRoutes:
    """
    Finds the route label of a request answered by a resource tree.

    The label is the path of static children (L{Resource.putChild}) the
    request went through from the root, such as C{/api/users}; once that
    path reaches a Klein application, the rule it matched (see
    L{kleinRoute}).  A request that reaches no static child is
    L{OTHER_ROUTE}, except C{/} itself: dynamic children
    (C{getChild}) could be one label per path.
    """

    def __init__(self, root: IResource) -> None:
        self.root = root

    def __call__(self, request: IRequest) -> str:
        resource = self.root
        segments: list[bytes] = request.prepath + request.postpath
        matched: list[bytes] = []
        for segment in segments:
            if isinstance(resource, KleinResource):
                break
            children = getattr(resource, "children", None)
            child = children.get(segment) if isinstance(children, dict) else None
            if child is None:
                break
            matched.append(segment)
            resource = child
        if isinstance(resource, KleinResource):
            return kleinRoute(request)
        if matched:
            return "/" + b"/".join(matched).decode("utf-8", "replace")
        if segments == [b""]:
            return "/"
        return OTHER_ROUTE


@implementer(IResource)
class OperationalRoot:
    """
    The root resource: C{/healthz}, C{/readyz} and C{/metrics} (exactly
    those paths) are gracesvc's; any other path goes, whole, to the
    application, as if it were the root: rendered by this root when the
    application is a leaf, traversed into when it has children.

    @ivar app: the application's resource.
    @ivar routes: gracesvc's resources, by first (and only) path segment.
    """

    isLeaf = False

    def __init__(self, app: IResource, routes: dict[bytes, IResource]) -> None:
        self.app = app
        self.routes = routes
        self._labels = {name: "/" + name.decode("ascii") for name in routes}
        self.appRoutes = ResourceRoutes(app)
        # An application that labels its requests itself (a WSGI one, see
        # L{gracesvc._apps.wsgi.DrainingWSGIResource.labelsRoutes}; the
        # demo's routes) is not labelled on the way: that label would be
        # replaced unread.
        self._appLabel: ResourceRoutes | None = (
            None if getattr(app, "labelsRoutes", False) else self.appRoutes
        )
        # A leaf application (Klein's, WSGI's) is rendered by this root
        # itself, with no step of traversal in between: it costs a request
        # a few calls fewer, and the application sees the request's paths
        # as it would as the root.  One with children is traversed into.
        self.isLeaf = bool(app.isLeaf)

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        if not request.postpath:
            route = self.routes.get(name)
            if route is not None:
                labelRoute(request, self._labels[name])
                return route
        # Traversal has moved the segment to prepath: give it back, and let
        # traversal go on from the application's root.
        request.postpath.insert(0, request.prepath.pop())
        if self._appLabel is not None:
            labelRoute(request, self._appLabel)
        return self.app

    def render(self, request: IRequest) -> object:
        if self.isLeaf:
            postpath = request.postpath
            if len(postpath) == 1:
                name = postpath[0]
                route = self.routes.get(name)
                if route is not None:
                    labelRoute(request, self._labels[name])
                    return route.render(request)
            if self._appLabel is not None:
                labelRoute(request, self._appLabel)
            return self.app.render(request)
        # Site always traverses at least one segment (b"" for "/") below a
        # root that is no leaf, so this is only reached when the root is
        # rendered directly.
        labelRoute(request, self.appRoutes)
        return self.app.render(request)

    def putChild(self, path: bytes, child: IResource) -> None:
        """
        Children are the application's.
        """
        self.app.putChild(path, child)


def withOperationalRoutes(
    app: IResource,
    drain: Drain,
    metrics: Metrics | None,
    ready: Callable[[], bool] | None = None,
) -> IResource:
    """
    The root resource serving C{app} and gracesvc's operational routes:
    C{/healthz} (200 while alive), C{/readyz} (503 once draining) and,
    unless C{metrics} is L{None} (served on an endpoint of their own),
    C{/metrics}.  Any other path is C{app}'s, C{/metrics} too when
    C{metrics} is L{None}.  C{ready}, if given, says whether the application
    is ready to serve (until it is, C{/readyz} is 503).

    Every request is labelled with its route for the metrics: gracesvc's
    paths as they are; the application's by the Klein rule it matched, the
    static children it went through (see L{ResourceRoutes}), or for WSGI
    what L{gracesvc._apps.wsgi.wsgiRoute} finds.
    """
    routes: dict[bytes, IResource] = {
        b"healthz": _Healthz(),
        b"readyz": _Readyz(drain, ready),
    }
    if metrics is not None:
        routes[b"metrics"] = MetricsResource(metrics)
    root: IResource = OperationalRoot(app, routes)
    return root
