"""
Loading C{--app} and C{--wsgi} applications: what loads, and the one-line
message of every way it can fail.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import textwrap
import types

from klein.resource import KleinResource
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import IResource

from gracesvc._apps.load import (
    AppFactory,
    AppLoadError,
    loadApp,
    loadASGI,
    loadWSGI,
    parseThreads,
)
from tests.apps import flaskapp, resourceapp


class InDirectory(SynchronousTestCase):
    """
    Each test runs in a temporary directory of its own, which is not on
    C{sys.path}, with modules written there.
    """

    def setUp(self) -> None:
        self.directory = os.path.realpath(tempfile.mkdtemp(prefix="gracesvc-load-"))
        self.addCleanup(shutil.rmtree, self.directory)
        cwd = os.getcwd()
        os.chdir(self.directory)
        self.addCleanup(os.chdir, cwd)
        path = sys.path[:]
        self.addCleanup(sys.path.__setitem__, slice(None), path)
        sys.path[:] = [p for p in sys.path if p not in ("", cwd, self.directory)]
        modules = set(sys.modules)

        def forget() -> None:
            for name in set(sys.modules) - modules:
                del sys.modules[name]

        self.addCleanup(forget)

    def module(self, name: str, source: str) -> None:
        with open(os.path.join(self.directory, name + ".py"), "w") as f:
            f.write(textwrap.dedent(source))
        importlib.invalidate_caches()

    def appError(self, spec: str) -> str:
        message = str(self.assertRaises(AppLoadError, loadApp, spec))
        self.assertNotIn("\n", message)
        return message

    def wsgiError(self, spec: str) -> str:
        message = str(self.assertRaises(AppLoadError, loadWSGI, spec))
        self.assertNotIn("\n", message)
        return message


class ImportTests(InDirectory):
    def test_currentDirectoryIsImportable(self) -> None:
        """
        A module in the current directory imports, as with gunicorn, though
        C{twistd}'s C{sys.path} does not hold the current directory.
        """
        self.module(
            "cwdapp",
            """
            from twisted.web.resource import Resource
            root = Resource()
            """,
        )
        resource = loadApp("cwdapp:root")
        self.assertIs(resource, sys.modules["cwdapp"].root)
        self.assertIn(self.directory, sys.path)

    def test_specSyntax(self) -> None:
        """
        Anything but C{MODULE:ATTRIBUTE} (with dotted names and an optional
        C{()}) is refused before anything is imported.
        """
        for spec in ["myapp", "myapp:", ":app", "my-app:app", "m:a b", "m:a()()"]:
            self.assertEqual(
                self.appError(spec),
                f"--app {spec!r}: expected MODULE:ATTRIBUTE, such as 'myapp:app' "
                f"or 'mypackage.web:create_app()'",
            )
        self.assertEqual(
            self.wsgiError("myapp.app"),
            "--wsgi 'myapp.app': expected MODULE:ATTRIBUTE, such as 'myapp:app' "
            "or 'mypackage.web:create_app()'",
        )

    def test_moduleNotFound(self) -> None:
        self.assertEqual(
            self.appError("nosuchapp:app"),
            f"--app 'nosuchapp:app': cannot import module 'nosuchapp': No module "
            f"named 'nosuchapp' (looked in the current directory, "
            f"{self.directory}, and sys.path)",
        )

    def test_dependencyNotFound(self) -> None:
        """
        A module the application imports is missing: the message says which,
        and where the application imports it.
        """
        self.module("needsdep", "import gracesvc_no_such_dependency\napp = 1\n")
        self.assertEqual(
            self.wsgiError("needsdep:app"),
            "--wsgi 'needsdep:app': cannot import module 'needsdep': No module "
            "named 'gracesvc_no_such_dependency' (needsdep.py:1)",
        )

    def test_syntaxError(self) -> None:
        self.module("badsyntax", "x = 1\ndef f(:\n    pass\n")
        self.assertEqual(
            self.appError("badsyntax:app"),
            "--app 'badsyntax:app': cannot import module 'badsyntax': "
            "SyntaxError at badsyntax.py:2: invalid syntax",
        )

    def test_exceptionWhileImporting(self) -> None:
        """
        An exception raised by the module's code: its type, its text on one
        line, and where it was raised.
        """
        self.module(
            "raisesonimport",
            """
            import os
            raise RuntimeError("DATABASE_URL is not set\\nset it first")
            """,
        )
        self.assertEqual(
            self.appError("raisesonimport:app"),
            "--app 'raisesonimport:app': cannot import module 'raisesonimport': "
            "RuntimeError: DATABASE_URL is not set; set it first "
            "(raisesonimport.py:3)",
        )

    def test_exitWhileImporting(self) -> None:
        self.module("exits", "import sys\nsys.exit(2)\n")
        self.assertEqual(
            self.appError("exits:app"),
            "--app 'exits:app': cannot import module 'exits': it called "
            "sys.exit(2) (exits.py:2)",
        )

    def test_failedImportIsNotHalfLoaded(self) -> None:
        """
        After a failed import, fixing the module and loading again works.
        """
        self.module("fixable", "raise ValueError('not yet')\n")
        self.appError("fixable:root")
        self.module(
            "fixable", "from twisted.web.resource import Resource\nroot = Resource()\n"
        )
        self.assertTrue(IResource.providedBy(loadApp("fixable:root")))


class AttributeTests(InDirectory):
    def setUp(self) -> None:
        super().setUp()
        self.module(
            "kinds",
            """
            from twisted.web.resource import Resource

            settings = {"debug": True}

            class Factory:
                app = None

            def needsArguments(a, b, c):
                pass

            def wsgiApp(environ, start_response):
                return []

            def makeWSGI():
                return wsgiApp

            def makeDict():
                return {}

            def raises():
                raise ValueError("bad config")

            class NoResource:
                def resource(self):
                    return None

            noResource = NoResource()

            class Root(Resource):
                pass

            def makeRoot():
                return Root()

            class BrokenProperty:
                @property
                def app(self):
                    raise KeyError("app")

            broken = BrokenProperty()
            """,
        )

    def test_missingAttribute(self) -> None:
        self.assertEqual(
            self.appError("kinds:setings"),
            "--app 'kinds:setings': module 'kinds' has no attribute 'setings' "
            "(did you mean 'settings'?)",
        )

    def test_missingDottedAttribute(self) -> None:
        self.assertEqual(
            self.wsgiError("kinds:Factory.nope"),
            "--wsgi 'kinds:Factory.nope': 'kinds:Factory' has no attribute 'nope'",
        )

    def test_attributeThatRaises(self) -> None:
        self.assertEqual(
            self.appError("kinds:broken.app"),
            "--app 'kinds:broken.app': looking up 'app' on 'kinds:broken' raised "
            "KeyError: 'app' (kinds.py:39)",
        )

    def test_wrongKind(self) -> None:
        self.assertEqual(
            self.appError("kinds:settings"),
            "--app 'kinds:settings' is a dict, not a Klein app (anything with "
            ".resource()), an IResource, or a callable returning one (taking no "
            "arguments, or only drain)",
        )
        self.assertEqual(
            self.appError("kinds:Factory.app"),
            "--app 'kinds:Factory.app' is None, not a Klein app (anything with "
            ".resource()), an IResource, or a callable returning one (taking no "
            "arguments, or only drain)",
        )

    def test_callableWithArguments(self) -> None:
        self.assertEqual(
            self.appError("kinds:needsArguments"),
            "--app 'kinds:needsArguments' takes (a, b, c): expected a callable "
            "taking no arguments, or only drain",
        )

    def test_wsgiGivenToApp(self) -> None:
        self.assertEqual(
            self.appError("kinds:wsgiApp"),
            "--app 'kinds:wsgiApp' takes (environ, start_response): it looks like "
            "a WSGI application, serve it with --wsgi",
        )
        self.assertEqual(
            self.appError("kinds:makeWSGI"),
            "--app 'kinds:makeWSGI': calling it returned the function "
            "'kinds.wsgiApp', not a Klein app or an IResource: it looks like a "
            "WSGI application, serve it with --wsgi",
        )

    def test_realFlaskGivenToApp(self) -> None:
        self.assertEqual(
            self.appError("tests.apps.flaskapp:app"),
            "--app 'tests.apps.flaskapp:app' takes (environ, start_response): it "
            "looks like a WSGI application, serve it with --wsgi",
        )

    def test_callableReturnsWrongKind(self) -> None:
        self.assertEqual(
            self.appError("kinds:makeDict"),
            "--app 'kinds:makeDict': calling it returned a dict, not a Klein app "
            "or an IResource",
        )

    def test_callableRaises(self) -> None:
        self.assertEqual(
            self.appError("kinds:raises"),
            "--app 'kinds:raises': calling it raised ValueError: bad config "
            "(kinds.py:22)",
        )

    def test_factoryTakingTheDrain(self) -> None:
        """
        A factory whose one required parameter is C{drain} is called with
        the drain once the service makes it (so that the app can add its
        hooks); what it makes, or how it fails, is judged then, in one line.
        """
        self.module(
            "withdrain",
            """
            from twisted.web.resource import Resource
            given = []
            def make(drain, debug=False):
                given.append(drain)
                return Resource()
            def broken(drain):
                raise ValueError("no pool")
            def nothing(drain):
                return None
            def tooMany(drain, other, third):
                return Resource()
            """,
        )
        factory = loadApp("withdrain:make")
        assert isinstance(factory, AppFactory)
        drain = object()
        self.assertTrue(IResource.providedBy(factory(drain)))
        self.assertEqual(sys.modules["withdrain"].given, [drain])
        for spec, message in [
            (
                "withdrain:broken",
                "--app 'withdrain:broken': calling it raised ValueError: no pool",
            ),
            (
                "withdrain:nothing",
                "--app 'withdrain:nothing': calling it returned None, not a Klein "
                "app or an IResource",
            ),
        ]:
            made = loadApp(spec)
            assert isinstance(made, AppFactory)
            error = str(self.assertRaises(AppLoadError, made, drain))
            self.assertTrue(error.startswith(message), error)
            self.assertNotIn("\n", error)
        self.assertEqual(
            self.appError("withdrain:tooMany"),
            "--app 'withdrain:tooMany' takes (drain, other, third): expected a "
            "callable taking no arguments, or only drain",
        )

    def test_resourceMethodReturnsWrongKind(self) -> None:
        self.assertEqual(
            self.appError("kinds:noResource"),
            "--app 'kinds:noResource': its resource() returned None, not an IResource",
        )

    def test_explicitCallOfSomethingNotCallable(self) -> None:
        self.assertEqual(
            self.appError("kinds:settings()"),
            "--app 'kinds:settings()': kinds:settings is a dict, which cannot be "
            "called",
        )

    def test_resourceClassFactoryAndCall(self) -> None:
        """
        A resource class and a function returning a resource are called with
        no arguments; C{()} calls explicitly.
        """
        for spec in ["kinds:Root", "kinds:makeRoot", "kinds:makeRoot()"]:
            resource = loadApp(spec)
            kinds = sys.modules["kinds"]
            self.assertIsInstance(resource, kinds.Root)

    def test_wsgiWrongKind(self) -> None:
        self.assertEqual(
            self.wsgiError("kinds:settings"),
            "--wsgi 'kinds:settings' is a dict, not a WSGI application (a callable "
            "taking environ and start_response)",
        )
        self.assertEqual(
            self.wsgiError("kinds:makeDict()"),
            "--wsgi 'kinds:makeDict()' is a dict, not a WSGI application (a "
            "callable taking environ and start_response)",
        )

    def test_wsgiGivenAResource(self) -> None:
        self.assertEqual(
            self.wsgiError("kinds:noResource"),
            "--wsgi 'kinds:noResource' is a kinds.NoResource: a Klein app or an "
            "IResource, not a WSGI application; serve it with --app",
        )
        self.assertEqual(
            self.wsgiError("tests.apps.kleinapp:app"),
            "--wsgi 'tests.apps.kleinapp:app' is a tests.apps.kleinapp.Greeter: a "
            "Klein app or an IResource, not a WSGI application; serve it with --app",
        )

    def test_wsgiFactoryWithoutCall(self) -> None:
        """
        An application factory named without C{()}: the message says how to
        call it.
        """
        self.assertEqual(
            self.wsgiError("kinds:makeWSGI"),
            "--wsgi 'kinds:makeWSGI' takes no arguments, not (environ, "
            "start_response): it is not a WSGI application; if it makes the "
            "application, use --wsgi 'kinds:makeWSGI()'",
        )
        self.assertEqual(
            self.wsgiError("kinds:needsArguments"),
            "--wsgi 'kinds:needsArguments' takes (a, b, c), not (environ, "
            "start_response): it is not a WSGI application",
        )

    def test_wsgiFactoryRaises(self) -> None:
        self.assertEqual(
            self.wsgiError("kinds:raises()"),
            "--wsgi 'kinds:raises()': calling it raised ValueError: bad config "
            "(kinds.py:22)",
        )


class FixtureTests(SynchronousTestCase):
    """
    The applications in L{tests.apps} load as a user would name them.
    """

    def test_kleinApp(self) -> None:
        self.assertIsInstance(loadApp("tests.apps.kleinapp:app"), KleinResource)

    def test_resourceClass(self) -> None:
        self.assertIsInstance(loadApp("tests.apps.resourceapp:Root"), resourceapp.Root)

    def test_flaskApp(self) -> None:
        self.assertIs(loadWSGI("tests.apps.flaskapp:app"), flaskapp.app)

    def test_flaskFactory(self) -> None:
        app = loadWSGI("tests.apps.flaskapp:createApp()")
        self.assertIsNot(app, flaskapp.app)
        self.assertEqual(type(app), type(flaskapp.app))

    def test_optionNameInMessages(self) -> None:
        """
        The caller names the option the spec came with.
        """
        error = self.assertRaises(AppLoadError, loadApp, "x", option="--root")
        self.assertTrue(str(error).startswith("--root 'x': "))


class ThreadsTests(SynchronousTestCase):
    def test_threads(self) -> None:
        self.assertEqual(parseThreads("4"), 4)
        self.assertEqual(parseThreads(1), 1)

    def test_badThreads(self) -> None:
        for value in ["0", "-1", "many", "2.5", ""]:
            self.assertEqual(
                str(self.assertRaises(AppLoadError, parseThreads, value)),
                f"--threads: expected a whole number of threads >= 1, got {value!r}",
            )


class LoadASGITests(SynchronousTestCase):
    def assertRefused(self, spec: str, message: str) -> None:
        error = self.assertRaises(AppLoadError, loadASGI, spec)
        self.assertIn(message, str(error))
        self.assertNotIn("\n", str(error))

    def test_asgi3(self) -> None:
        from tests.apps.asgiraw import app

        self.assertIs(loadASGI("tests.apps.asgiraw:app"), app)

    def test_frameworks(self) -> None:
        """
        FastAPI's and Starlette's applications, Django's handler and
        Channels' router are ASGI 3 applications, loaded as they are.
        """
        from tests.apps import fastapiapp, starletteapp

        self.assertIs(loadASGI("tests.apps.fastapiapp:app"), fastapiapp.app)
        self.assertIs(loadASGI("tests.apps.starletteapp:app"), starletteapp.app)
        loadASGI("tests.apps.djangoapp.channelsasgi:application")

    def test_asgi2IsWrapped(self) -> None:
        """
        An ASGI 2 application (a class made with the scope) is run as an
        ASGI 3 one.
        """
        import asyncio

        calls: list[object] = []

        class Legacy:
            def __init__(self, scope: object) -> None:
                calls.append(scope)

            async def __call__(self, receive: object, send: object) -> None:
                calls.append((receive, send))

        module = _module("asgi2app", Legacy=Legacy)
        self.addCleanup(sys.modules.pop, module.__name__)
        application = loadASGI("asgi2app:Legacy")
        asyncio.run(application({"type": "http"}, "receive", "send"))
        self.assertEqual(calls, [{"type": "http"}, ("receive", "send")])

    def test_wrongKinds(self) -> None:
        self.assertRefused("tests.apps.flaskapp:app", "serve it with --wsgi")
        self.assertRefused("tests.apps.resourceapp:Root", "serve it with --app")
        self.assertRefused(
            "tests.apps.djangoapp.settings:SECRET_KEY",
            "is a str, not an ASGI application (a callable taking scope, receive and send)",
        )
        self.assertRefused(
            "tests.apps.nosuch:app",
            "--asgi 'tests.apps.nosuch:app': cannot import module",
        )

    def test_factoryWithoutCall(self) -> None:
        def create_app() -> object:
            return None

        module = _module("asgifactory", create_app=create_app)
        self.addCleanup(sys.modules.pop, module.__name__)
        self.assertRefused(
            "asgifactory:create_app", "use --asgi 'asgifactory:create_app()'"
        )


def _module(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(module, key, value)
    sys.modules[name] = module
    return module
