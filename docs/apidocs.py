"""
pydoctor's system for gracesvc's API docs (C{make docs}), and the check of
their links that C{make check} runs (L{LinkCheckWriter}).

Two things differ from pydoctor's own system.

Links to Twisted and to the standard library are checked against what is
installed, with no network.  gracesvc's docstrings link to Twisted's
classes and to Python's as often as to their own (C{L{HTTPChannel}},
C{L{None}}); pydoctor resolves such a link through intersphinx inventories
downloaded from the projects' sites, and reports it as broken without one.
C{make check} must not depend on the network, so L{InstalledInventory}
looks a name outside gracesvc up in the installed packages instead: it
imports the module and looks the attributes up (on a class, its instance
attributes too; on an interface, its methods).  A name that does not exist
in the installed version is reported as broken, as a misspelt gracesvc name
is.  The link goes where each project's API docs put the name: Twisted's
are built by pydoctor, Python's by Sphinx.  Other packages are not linked:
a link to one is reported, so that it is added here on purpose.
Inventories given with C{--intersphinx} (C{make docs PYDOCTOR_ARGS=...}) are
looked up first.

The objects that a package re-exports keep their module's names.  pydoctor
documents a name that a package re-exports through C{__all__}
(C{gracesvc.DrainingSite}, defined in a private module) under the package,
and then resolves the links in its docstrings among the package's imports:
C{L{Site}} in C{DrainingSite}'s docstring would be broken.
L{KeepsItsModule} looks such a name up in the module that defined the
object, and a class's name among its inherited members too (C{L{ended}} in
a class that inherits C{ended}), as Python would find C{self.ended}.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import inspect
import sys
import textwrap
from collections.abc import Callable, Collection

from pydoctor import epydoc2stan
from pydoctor.extensions import (
    AttributeMixin,
    ClassMixin,
    ExtRegistrar,
    FunctionMixin,
)
from pydoctor.model import Attribute, Class, Documentable, System
from pydoctor.sphinx import SphinxInventory
from pydoctor.templatewriter import TemplateWriter
from zope.interface.interface import InterfaceClass

TWISTED_API = "https://docs.twisted.org/en/stable/api"
PYTHON_DOCS = "https://docs.python.org/3"


def _instanceAttributes(cls: type) -> set[str]:
    """
    The names that C{cls} or one of its bases assigns on C{self}, or
    declares in C{__slots__} or an annotation: attributes that exist only
    on instances.
    """
    names: set[str] = set()
    for klass in inspect.getmro(cls):
        names.update(getattr(klass, "__annotations__", {}))
        slots = klass.__dict__.get("__slots__", ())
        names.update([slots] if isinstance(slots, str) else slots)
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and isinstance(node.ctx, ast.Store)
            ):
                names.add(node.attr)
    return names


#: The builtin types that Python's documentation describes in "Built-in
#: Types"; the others (C{int}, C{object}, C{property}) are in "Built-in
#: Functions".
STDTYPES = {
    "bytearray",
    "bytes",
    "dict",
    "frozenset",
    "list",
    "memoryview",
    "range",
    "set",
    "str",
    "tuple",
}


def _hasPage(obj: object, name: str) -> bool:
    """
    Whether pydoctor gives C{obj}, found as C{name}, a page of its own: a
    module, a class or an interface, but not an attribute whose value is
    one (C{ThreadPool.threadFactory}).
    """
    if not (inspect.ismodule(obj) or isinstance(obj, (type, InterfaceClass))):
        return False
    return str(getattr(obj, "__name__", "")).rsplit(".", 1)[-1] == name


def _split(name: str) -> tuple[str, list[str]] | None:
    """
    Split a dotted name into the longest importable module and the
    attributes after it, or L{None} if no module of that name is installed.
    """
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        module = ".".join(parts[:end])
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        except Exception:
            return None
        return module, parts[end:]
    return None


def _exists(module: str, attributes: list[str]) -> bool:
    """
    Whether C{module}'s C{attributes}, one after the other, exist.
    """
    obj: object = sys.modules[module]
    last = len(attributes) - 1
    for i, attribute in enumerate(attributes):
        if isinstance(obj, InterfaceClass):
            if i == last and attribute in obj.names(all=True):
                return True
            return False
        if hasattr(obj, attribute):
            obj = getattr(obj, attribute)
        elif isinstance(obj, type) and i == last:
            return attribute in _instanceAttributes(obj)
        else:
            return False
    return True


def _twistedLink(module: str, attributes: list[str]) -> str:
    """
    Where pydoctor puts a name in Twisted's API docs: a module, a class or
    an interface has a page of its own, anything else is an anchor in its
    parent's page.
    """
    obj: object = sys.modules[module]
    page = [module]
    for attribute in attributes:
        if isinstance(obj, InterfaceClass):
            break
        obj = getattr(obj, attribute, None)
        if not _hasPage(obj, attribute):
            break
        page.append(attribute)
    anchor = attributes[len(page) - 1 :]
    url = f"{TWISTED_API}/{'.'.join(page)}.html"
    return f"{url}#{'.'.join(anchor)}" if anchor else url


def _pythonLink(name: str, module: str, attributes: list[str]) -> str:
    """
    Where Sphinx puts a name in Python's documentation.
    """
    if module == "builtins":
        obj = getattr(builtins, attributes[0])
        if isinstance(obj, type) and issubclass(obj, BaseException):
            page = "exceptions"
        elif obj is None or obj is NotImplemented or isinstance(obj, bool):
            page = "constants"
        elif name in STDTYPES:
            page = "stdtypes"
        else:
            page = "functions"
        return f"{PYTHON_DOCS}/library/{page}.html#{name}"
    if not attributes:
        return f"{PYTHON_DOCS}/library/{module}.html#module-{module}"
    return f"{PYTHON_DOCS}/library/{module}.html#{name}"


@functools.cache
def installedLink(name: str) -> str | None:
    """
    @param name: a name as a docstring links to it, fully qualified
        (C{twisted.web.http.HTTPChannel}) or a builtin (C{None}).
    @return: the link to C{name} in the installed Twisted or standard
        library, or L{None} if there is no such name (or it belongs to
        another package).
    """
    if "." not in name and hasattr(builtins, name):
        module, attributes = "builtins", [name]
    else:
        found = _split(name)
        if found is None:
            return None
        module, attributes = found
    if not _exists(module, attributes):
        return None
    top = module.split(".")[0]
    if top == "twisted":
        return _twistedLink(module, attributes)
    if top in sys.stdlib_module_names:
        return _pythonLink(name, module, attributes)
    return None


class InstalledInventory(SphinxInventory):  # type: ignore[misc]
    """
    An intersphinx inventory that also knows every name of the installed
    Twisted and standard library (L{installedLink}).
    """

    def __init__(
        self, logger: Callable[..., None], rootNames: Callable[[], Collection[str]]
    ) -> None:
        """
        @param rootNames: the top-level names of the system documented,
            which are never looked up here: pydoctor resolves them itself.
        """
        super().__init__(logger=logger)
        self._rootNames = rootNames

    def getLink(self, name: str) -> str | None:
        url: str | None = super().getLink(name)
        if url is None and name.split(".")[0] not in self._rootNames():
            url = installedLink(name)
        return url


class KeepsItsModule(ClassMixin, FunctionMixin, AttributeMixin):  # type: ignore[misc]
    """
    A documented class, function or attribute that finds the names its
    docstring links to as Python would: a class among its inherited members,
    and an object that a package re-exports in the module that defined it.
    """

    _home: Documentable | None = None

    def reparent(self, new_parent: Documentable, new_name: str) -> None:
        if self._home is None:
            self._home = self.parent
        super().reparent(new_parent, new_name)

    def _localNameToFullName(self, name: str) -> str:
        if isinstance(self, Class) and name not in self.contents:
            inherited = self.find(name)
            if inherited is not None:
                fullName: str = inherited.fullName()
                return fullName
        fullName = super()._localNameToFullName(name)
        if fullName == name and self._home is not None:
            fullName = self._home._localNameToFullName(name)
        return fullName

    def isNameDefined(self, name: str) -> bool:
        defined: bool = super().isNameDefined(name)
        if not defined and self._home is not None:
            defined = self._home.isNameDefined(name)
        return defined


def setup_pydoctor_extension(r: ExtRegistrar) -> None:
    """
    Register L{KeepsItsModule}: pydoctor calls this for each module that
    L{GraceSystem.custom_extensions} names.
    """
    r.register_mixin(KeepsItsModule)


class GraceSystem(System):  # type: ignore[misc]
    """
    pydoctor's system, with links outside gracesvc checked against the
    installed packages (L{InstalledInventory}), and names resolved as
    Python resolves them (L{KeepsItsModule}).
    """

    custom_extensions = ["docs.apidocs"]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.intersphinx = InstalledInventory(
            logger=self.msg, rootNames=lambda: self.root_names
        )


class LinkCheckWriter(TemplateWriter):  # type: ignore[misc]
    """
    A writer that renders every docstring, as the HTML pages would show it,
    and writes no page: what C{make check} needs to find every broken link
    and docstring syntax error, in well under half the time the pages take.

    pydoctor still writes its C{objects.inv} to the output directory.
    """

    def prepOutputDirectory(self) -> None:
        self.build_directory.mkdir(exist_ok=True, parents=True)

    def writeSummaryPages(self, system: System) -> None:
        pass

    def writeLinks(self, system: System) -> None:
        pass

    def writeIndividualFiles(self, obs: Collection[Documentable]) -> None:
        for ob in obs:
            self._check(ob)

    def _check(self, ob: Documentable) -> None:
        if not ob.isVisible:
            return
        epydoc2stan.format_docstring(ob)
        if isinstance(ob, Attribute):
            epydoc2stan.type2stan(ob)
        for child in ob.contents.values():
            self._check(child)
