# -*- test-case-name: tests.unit.apps.test_load -*-
"""
Loading the user's application: C{--app MODULE:ATTRIBUTE},
C{--wsgi MODULE:ATTRIBUTE} and C{--asgi MODULE:ATTRIBUTE}.

The module is imported as gunicorn and C{twistd web --class} users expect:
the current directory is importable.  C{ATTRIBUTE} may be a dotted path
(C{myapp:factory.app}) and end in C{()} to call it with no arguments
(C{myapp:create_app()}).  An C{--app} factory whose one required parameter
is named C{drain} is called with gracesvc's L{gracesvc.Drain} once the
service is made, so that the app can register its drain hooks (closing a
pool in the C{cleanup} phase, say).  Every way this can go wrong is an
L{AppLoadError} whose message is one line a user can act on.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.web.resource import IResource

if TYPE_CHECKING:
    from gracesvc._apps.wsgi import WSGIApplication

_IDENTIFIERS = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_SPEC = re.compile(
    rf"(?P<module>{_IDENTIFIERS}):(?P<attribute>{_IDENTIFIERS})(?P<call>\(\))?"
)

_APP_KINDS = "a Klein app (anything with .resource()), an IResource, or a callable returning one (taking no arguments, or only drain)"
_WSGI_KIND = "a WSGI application (a callable taking environ and start_response)"
_ASGI_KIND = "an ASGI application (a callable taking scope, receive and send)"


_IMPORTLIB = os.path.dirname(importlib.__file__)


class AppFactory:
    """
    An C{--app} factory that takes the drain: C{factory(drain=drain)} makes
    the app, once the service's L{gracesvc.Drain} exists.
    """

    def __init__(self, factory: Callable[..., Any], where: str) -> None:
        self.factory = factory
        self.where = where

    def __call__(self, drain: object) -> IResource:
        """
        @return: the app C{factory} makes for C{drain}, as a resource.
        @raise AppLoadError: calling it failed, or it made no app.
        """
        return _madeApp(lambda: self.factory(drain=drain), self.where)


class AppLoadError(ValueError):
    """
    The application could not be loaded.  The message is one line that says
    which option, what went wrong and, where there is one, the exception's
    own text.
    """


def loadApp(spec: str, option: str = "--app") -> IResource | AppFactory:
    """
    Load the application C{spec} names as the root resource to serve.

    @param spec: C{MODULE:ATTRIBUTE}, naming a Klein app (anything with a
        C{resource()} method), an L{IResource} provider, or a callable taking
        no arguments (such as a L{Resource <twisted.web.resource.Resource>} subclass) that returns one of
        these, or a callable whose one required parameter is C{drain}.
    @param option: the option C{spec} was given with, for messages.
    @return: the resource, or for a factory taking the drain an
        L{AppFactory}, called once the drain exists.
    @raise AppLoadError: the module does not import, the attribute is
        missing, the object is of the wrong kind, or calling it fails.
    """
    where = f"{option} {spec!r}"
    found = _find(spec, where)
    app = _asResource(found, where)
    if app is not None:
        return app
    if not callable(found):
        raise AppLoadError(f"{where} is {_describe(found)}, not {_APP_KINDS}")
    signature = _signature(found)
    if (
        signature is not None
        and not _binds(signature)
        and "drain" in signature.parameters
        and _binds(signature, drain=None)
    ):
        return AppFactory(found, where)
    _checkNoArguments(found, where)
    return _madeApp(found, where)


def _madeApp(factory: Callable[[], Any], where: str) -> IResource:
    """
    Call an app factory and judge what it made.

    @return: what C{factory} made, as a resource.
    @raise AppLoadError: calling it failed, or it made no app.
    """
    made = _call(factory, "calling it", where)
    app = _asResource(made, where)
    if app is not None:
        return app
    hint = ""
    if _looksLikeWSGI(made):
        hint = ": it looks like a WSGI application, serve it with --wsgi"
    raise AppLoadError(
        f"{where}: calling it returned {_describe(made)}, not a Klein app or an "
        f"IResource{hint}"
    )


def loadWSGI(spec: str, option: str = "--wsgi") -> WSGIApplication:
    """
    Load the WSGI application C{spec} names.

    @param spec: C{MODULE:ATTRIBUTE}, naming a WSGI application; with a
        trailing C{()}, a callable taking no arguments that returns one (an
        application factory).
    @param option: the option C{spec} was given with, for messages.
    @raise AppLoadError: the module does not import, the attribute is
        missing, or the object is not a WSGI application.
    """
    where = f"{option} {spec!r}"
    found = _find(spec, where)
    if IResource.providedBy(found) or _hasResourceMethod(found):
        raise AppLoadError(
            f"{where} is {_describe(found)}: a Klein app or an IResource, not a "
            f"WSGI application; serve it with --app"
        )
    if not callable(found):
        raise AppLoadError(f"{where} is {_describe(found)}, not {_WSGI_KIND}")
    signature = _signature(found)
    if signature is not None and not _binds(signature, None, None):
        hint = ""
        if not spec.endswith("()") and _binds(signature):
            hint = f"; if it makes the application, use {option} {spec + '()'!r}"
        raise AppLoadError(
            f"{where} takes {_parameters(signature)}, not (environ, "
            f"start_response): it is not a WSGI application{hint}"
        )
    application: WSGIApplication = found
    return application


def loadASGI(spec: str, option: str = "--asgi") -> Callable[..., Any]:
    """
    Load the ASGI application C{spec} names.

    @param spec: C{MODULE:ATTRIBUTE}, naming an ASGI 3 application (C{await
        app(scope, receive, send)}: FastAPI's, Starlette's, Django's
        C{get_asgi_application()}, Channels' router) or an ASGI 2 one (a
        class made with the scope, whose instances are called with
        C{receive} and C{send}), which is wrapped in an ASGI 3 one; with a
        trailing C{()}, a callable taking no arguments that returns one.
    @param option: the option C{spec} was given with, for messages.
    @return: the ASGI 3 application.
    @raise AppLoadError: the module does not import, the attribute is
        missing, or the object is not an ASGI application.
    """
    where = f"{option} {spec!r}"
    found = _find(spec, where)
    if IResource.providedBy(found) or _hasResourceMethod(found):
        raise AppLoadError(
            f"{where} is {_describe(found)}: a Klein app or an IResource, not an "
            f"ASGI application; serve it with --app"
        )
    if not callable(found):
        raise AppLoadError(f"{where} is {_describe(found)}, not {_ASGI_KIND}")
    if isinstance(found, type):
        signature = _signature(found)
        if signature is not None and _binds(signature, None):
            return _asgi2(found)
        raise AppLoadError(f"{where} is {_describe(found)}, not {_ASGI_KIND}")
    signature = _signature(found)
    if signature is None or _binds(signature, None, None, None):
        application: Callable[..., Any] = found
        return application
    if _binds(signature, None, None):
        raise AppLoadError(
            f"{where} takes {_parameters(signature)}: it looks like a WSGI "
            f"application, serve it with --wsgi"
        )
    hint = ""
    if not spec.endswith("()") and _binds(signature):
        hint = f"; if it makes the application, use {option} {spec + '()'!r}"
    raise AppLoadError(
        f"{where} takes {_parameters(signature)}, not (scope, receive, send): "
        f"it is not an ASGI application{hint}"
    )


def _asgi2(application: Callable[[Any], Any]) -> Callable[..., Any]:
    """
    @return: the ASGI 3 application that runs the ASGI 2 C{application}.
    """

    async def asgi3(scope: Any, receive: Any, send: Any) -> None:
        await application(scope)(receive, send)

    return asgi3


def parseThreads(value: object, option: str = "--threads") -> int:
    """
    @return: C{value} as a number of threads.
    @raise AppLoadError: C{value} is not a whole number >= 1.
    """
    try:
        threads = int(str(value))
    except ValueError:
        threads = 0
    if threads < 1:
        raise AppLoadError(
            f"{option}: expected a whole number of threads >= 1, got {value!r}"
        )
    return threads


def _find(spec: str, where: str) -> Any:
    """
    Import the module C{spec} names and look up its attribute; call it if
    C{spec} ends in C{()}.
    """
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        raise AppLoadError(
            f"{where}: expected MODULE:ATTRIBUTE, such as 'myapp:app' or "
            f"'mypackage.web:create_app()'"
        )
    moduleName, attribute = match["module"], match["attribute"]
    found: Any = _importModule(moduleName, where)
    owner = f"module {moduleName!r}"
    looked: list[str] = []
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise AppLoadError(
                f"{where}: {owner} has no attribute {part!r}{_didYouMean(part, found)}"
            ) from None
        except Exception as e:
            raise AppLoadError(
                f"{where}: looking up {part!r} on {owner} raised {_oneLine(e)}"
            ) from None
        looked.append(part)
        owner = repr(f"{moduleName}:{'.'.join(looked)}")
    if match["call"]:
        if not callable(found):
            raise AppLoadError(
                f"{where}: {moduleName}:{attribute} is {_describe(found)}, which "
                f"cannot be called"
            )
        _checkNoArguments(found, where)
        found = _call(found, "calling it", where)
    return found


def _importModule(name: str, where: str) -> Any:
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        text = _oneLine(e)
        if isinstance(e, ModuleNotFoundError) and e.name is not None:
            if name == e.name or name.startswith(e.name + "."):
                text += f" (looked in the current directory, {cwd}, and sys.path)"
        raise AppLoadError(f"{where}: cannot import module {name!r}: {text}") from None


def _asResource(candidate: Any, where: str) -> IResource | None:
    """
    @return: C{candidate} as a resource, if it is one or a Klein app;
        L{None} if it is neither.
    """
    if IResource.providedBy(candidate):
        resource: IResource = candidate
        return resource
    if not _hasResourceMethod(candidate):
        return None
    made = _call(candidate.resource, "its resource()", where)
    if IResource.providedBy(made):
        resource = made
        return resource
    raise AppLoadError(
        f"{where}: its resource() returned {_describe(made)}, not an IResource"
    )


def _hasResourceMethod(candidate: Any) -> bool:
    # A class with a resource() method is a factory, not an app: its
    # resource is a plain function until the class is instantiated.
    return not isinstance(candidate, type) and callable(
        getattr(candidate, "resource", None)
    )


def _call(f: Callable[[], Any], what: str, where: str) -> Any:
    """
    @param what: the call, for the message: C{calling it} or C{its
        resource()} (raised ...).
    """
    try:
        return f()
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        raise AppLoadError(f"{where}: {what} raised {_oneLine(e)}") from None


def _checkNoArguments(f: Any, where: str) -> None:
    signature = _signature(f)
    if signature is None or _binds(signature):
        return
    if _binds(signature, None, None):
        raise AppLoadError(
            f"{where} takes {_parameters(signature)}: it looks like a WSGI "
            f"application, serve it with --wsgi"
        )
    raise AppLoadError(
        f"{where} takes {_parameters(signature)}: expected a callable taking no "
        f"arguments, or only drain"
    )


def _signature(f: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(f)
    except (TypeError, ValueError):
        return None


def _binds(
    signature: inspect.Signature, *arguments: object, **keywords: object
) -> bool:
    """
    @return: whether a callable with C{signature} accepts C{arguments} and
        C{keywords}.
    """
    try:
        signature.bind(*arguments, **keywords)
    except TypeError:
        return False
    return True


def _looksLikeWSGI(candidate: Any) -> bool:
    signature = _signature(candidate) if callable(candidate) else None
    return signature is not None and _binds(signature, None, None)


def _parameters(signature: inspect.Signature) -> str:
    bare = signature.replace(
        parameters=[
            p.replace(annotation=inspect.Parameter.empty)
            for p in signature.parameters.values()
        ],
        return_annotation=inspect.Signature.empty,
    )
    text = str(bare)
    return "no arguments" if text == "()" else text


def _describe(value: Any) -> str:
    """
    @return: what C{value} is, for a message: C{None}, C{the module 'os'},
        C{a dict}, C{a flask.app.Flask}, C{the class 'myapp.Root'}, C{the
        function 'myapp.make'}.
    """
    if value is None:
        return "None"
    if inspect.ismodule(value):
        return f"the module {value.__name__!r}"
    if isinstance(value, type):
        return f"the class '{_qualified(value)}'"
    if inspect.isfunction(value) or inspect.ismethod(value) or inspect.isbuiltin(value):
        module = getattr(value, "__module__", None)
        qualname = getattr(value, "__qualname__", repr(value))
        return f"the function '{module}.{qualname}'" if module else repr(value)
    kind = _qualified(type(value))
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    return f"{article} {kind}"


def _qualified(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _didYouMean(name: str, namespace: object) -> str:
    close = difflib.get_close_matches(
        name, [n for n in dir(namespace) if not n.startswith("__")], n=1
    )
    return f" (did you mean {close[0]!r}?)" if close else ""


def _oneLine(e: BaseException) -> str:
    """
    An exception as one line: its type and text (only the text for an
    C{ImportError}, whose text says it all), and where it was raised.
    """
    if isinstance(e, SyntaxError):
        return (
            f"{type(e).__name__} at {_relative(e.filename or '?')}:{e.lineno}: "
            f"{_flatten(e.msg)}"
        )
    if isinstance(e, SystemExit):
        text = f"it called sys.exit({e.code!r})"
    elif isinstance(e, ImportError):
        text = _flatten(str(e)) or type(e).__name__
    else:
        message = _flatten(str(e))
        text = f"{type(e).__name__}: {message}" if message else type(e).__name__
    origin = _origin(e)
    return f"{text} ({origin})" if origin else text


def _flatten(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _origin(e: BaseException) -> str | None:
    """
    @return: C{file:line} of the innermost frame of C{e}'s traceback that is
        the application's: not importlib's nor this module's.
    """
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if (
            frame.filename.startswith("<frozen ")
            or frame.filename == __file__
            or os.path.dirname(frame.filename) == _IMPORTLIB
        ):
            continue
        return f"{_relative(frame.filename)}:{frame.lineno}"
    return None


def _relative(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative
