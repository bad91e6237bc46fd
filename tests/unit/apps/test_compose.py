"""
A user's application behind gracesvc's operational routes, through
in-memory connections to a real L{DrainingSite}: which path goes where, and
the route each request is counted under.
"""

from __future__ import annotations

from collections.abc import Callable

from klein import Klein
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from gracesvc._apps.compose import OperationalRoot, withOperationalRoutes
from gracesvc.testing import Response, Wire, get, parseResponses, samples
from tests.apps.kleinapp import Greeter
from tests.apps.resourceapp import Root


class ComposeTestCase(SynchronousTestCase):
    def serve(self, makeApp: Callable[[Wire], IResource], metrics: bool = True) -> None:
        self.wire = Wire(
            resource=lambda wire: withOperationalRoutes(
                makeApp(wire), wire.drain, wire.metrics if metrics else None
            )
        )

    def fetch(self, path: str) -> Response:
        client = self.wire.connect()
        client.send(get(path))
        [response] = parseResponses(client.protocol.data)
        return response

    def routes(self) -> dict[tuple[str, str], float]:
        return {
            (dict(labels)["route"], dict(labels)["code"]): value
            for (name, labels), value in samples(self.wire.metrics.exposition()).items()
            if name == "gracesvc_requests_total"
        }


class KleinAppTests(ComposeTestCase):
    def setUp(self) -> None:
        self.serve(lambda wire: Greeter(wire.clock, delay=1).resource())

    def test_asyncRoutes(self) -> None:
        """
        C{async def} handlers answer; each request is counted under the rule
        its route matched, not its path.
        """
        response = self.fetch("/hello")
        self.assertEqual((response.code, response.body), (200, b"hello from klein\n"))
        self.assertEqual(self.fetch("/users/7").body, b"user 7\n")
        self.fetch("/users/8")
        self.assertEqual(self.fetch("/nope").code, 404)
        self.assertEqual(self.fetch("/users/x").code, 404)
        self.assertEqual(
            self.routes(),
            {
                ("/hello", "200"): 1,
                ("/users/<int:userID>", "200"): 2,
                ("other", "404"): 2,
            },
        )

    def test_asyncHandlerInFlightCompletes(self) -> None:
        """
        An C{async def} handler awaiting a Deferred when the drain starts is
        answered, and the drain ends with it.
        """
        client = self.wire.connect()
        client.send(get("/slow"))
        done = self.wire.drain.start()
        self.wire.advance(0.9)
        self.assertNoResult(done)
        self.wire.advance(0.2)
        [response] = parseResponses(client.protocol.data)
        self.assertEqual((response.code, response.body), (200, b"slow from klein\n"))
        self.successResultOf(done)

    def test_asyncHandlerCutAtTheCap(self) -> None:
        self.serve(lambda wire: Greeter(wire.clock, delay=60).resource())
        client = self.wire.connect()
        client.send(get("/slow"))
        done = self.wire.drain.start()
        self.wire.advance(5)
        self.successResultOf(done)
        [response] = client.responses
        self.assertEqual(response.code, 503)
        self.assertEqual(self.routes(), {("/slow", "503"): 1})

    def test_operationalRoutes(self) -> None:
        """
        C{/healthz}, C{/readyz} and C{/metrics} are gracesvc's, next to the
        app, and counted under their paths.
        """
        self.assertEqual(self.fetch("/healthz").body, b'{"status": "ok"}')
        self.assertEqual(self.fetch("/readyz").code, 200)
        metrics = self.fetch("/metrics")
        self.assertEqual(metrics.code, 200)
        self.assertIn(b"gracesvc_requests_in_flight", metrics.body)
        self.wire.drain.start()
        draining = self.fetch("/readyz")
        self.assertEqual(
            (draining.code, draining.body), (503, b'{"status": "draining"}')
        )
        self.assertEqual(self.fetch("/healthz").code, 200)
        routes = self.routes()
        self.assertEqual(routes[("/healthz", "200")], 2)
        self.assertEqual(routes[("/readyz", "503")], 1)

    def test_onlyExactOperationalPaths(self) -> None:
        """
        Below or beside gracesvc's paths is the app's.
        """
        self.assertEqual(self.fetch("/healthz/deep").code, 404)
        self.assertEqual(self.routes(), {("other", "404"): 1})

    def test_wrongMethod(self) -> None:
        client = self.wire.connect()
        client.send(b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        [response] = client.responses
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers[b"allow"], b"GET, HEAD")


class LeafAppTests(ComposeTestCase):
    def test_leafAppSeesThePathsAsTheRoot(self) -> None:
        """
        A leaf application (Klein's, WSGI's) is rendered by the root with
        no step of traversal: it sees the request's paths as it would as
        the root, and gracesvc's paths are still gracesvc's.
        """
        seen: list[tuple[list[bytes], list[bytes]]] = []

        class Leaf(Resource):
            isLeaf = True

            def render_GET(self, request: IRequest) -> bytes:
                seen.append((list(request.prepath), list(request.postpath)))
                return b"leaf\n"

        self.serve(lambda wire: Leaf())
        root = self.wire.site.resource
        assert isinstance(root, OperationalRoot)
        self.assertTrue(root.isLeaf)
        self.assertEqual(self.fetch("/a/b").body, b"leaf\n")
        self.assertEqual(self.fetch("/").body, b"leaf\n")
        self.assertEqual(self.fetch("/healthz").body, b'{"status": "ok"}')
        self.assertEqual(self.fetch("/healthz/deep").body, b"leaf\n")
        self.assertEqual(
            seen, [([], [b"a", b"b"]), ([], [b""]), ([], [b"healthz", b"deep"])]
        )

    def test_headOnAKleinRoute(self) -> None:
        """
        C{HEAD} on a C{GET} route of a Klein app: its headers, no body.
        """
        self.serve(lambda wire: Greeter(wire.clock).resource())
        client = self.wire.connect()
        client.send(b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n" + get("/hello"))
        self.assertEqual([r.code for r in client.responses], [200, 200])
        self.assertEqual(client.responses[1].body, b"hello from klein\n")

    def test_treeIsTraversed(self) -> None:
        self.serve(lambda wire: Root())
        root = self.wire.site.resource
        assert isinstance(root, OperationalRoot)
        self.assertFalse(root.isLeaf)


class MetricsElsewhereTests(ComposeTestCase):
    def test_metricsPathIsTheApps(self) -> None:
        """
        With the metrics on an endpoint of their own, C{/metrics} is the
        app's.
        """
        router = Klein()

        @router.route("/metrics")
        def appMetrics(request: IRequest) -> bytes:
            return b"the app's own\n"

        self.serve(lambda wire: router.resource(), metrics=False)
        self.assertEqual(self.fetch("/metrics").body, b"the app's own\n")
        self.assertEqual(self.fetch("/readyz").code, 200)


class ResourceTreeTests(ComposeTestCase):
    def setUp(self) -> None:
        self.serve(lambda wire: Root())

    def test_staticChildrenAreRoutes(self) -> None:
        """
        A plain resource tree is counted by the static children each request
        went through; a dynamic child is not a route of its own.
        """
        self.assertEqual(self.fetch("/").body, b"index\n")
        self.assertEqual(self.fetch("/hello").body, b"hello from a resource\n")
        self.assertEqual(self.fetch("/api/users/bob").body, b"user bob\n")
        self.fetch("/api/users/alice")
        self.assertEqual(self.fetch("/nope").code, 404)
        self.assertEqual(
            self.routes(),
            {
                ("/", "200"): 1,
                ("/hello", "200"): 1,
                ("/api/users", "200"): 2,
                ("other", "404"): 1,
            },
        )

    def test_kleinBelowAStaticChild(self) -> None:
        """
        A Klein app mounted in a tree: its rule, under where it is mounted.
        """

        def tree(wire: Wire) -> IResource:
            root = Resource()
            root.putChild(b"greeter", Greeter(wire.clock).resource())
            return root

        self.serve(tree)
        self.assertEqual(self.fetch("/greeter/users/3").body, b"user 3\n")
        self.assertEqual(self.routes(), {("/greeter/users/<int:userID>", "200"): 1})
