"""
The API docs' check (C{docs/apidocs.py}): a link to a name that does not
exist fails it, whether the name is gracesvc's, Twisted's or Python's, and
a link that resolves in Python resolves in the docs.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import textwrap
from contextlib import redirect_stdout

from pydoctor.driver import main as pydoctor
from twisted.trial.unittest import SynchronousTestCase

from docs.apidocs import PYTHON_DOCS, TWISTED_API, installedLink


class InstalledLinkTests(SynchronousTestCase):
    """
    L{installedLink} finds names in the installed Twisted and standard
    library, where their own API docs put them.
    """

    def test_twistedClass(self) -> None:
        self.assertEqual(
            installedLink("twisted.web.http.HTTPChannel"),
            f"{TWISTED_API}/twisted.web.http.HTTPChannel.html",
        )

    def test_twistedMethod(self) -> None:
        self.assertEqual(
            installedLink("twisted.web.http.Request.notifyFinish"),
            f"{TWISTED_API}/twisted.web.http.Request.html#notifyFinish",
        )

    def test_twistedModule(self) -> None:
        self.assertEqual(
            installedLink("twisted.test.iosim"),
            f"{TWISTED_API}/twisted.test.iosim.html",
        )

    def test_interfaceMethod(self) -> None:
        """
        An interface's methods are not attributes of the interface object,
        yet are documented on its page.
        """
        self.assertEqual(
            installedLink("twisted.internet.interfaces.IReactorSSL.listenSSL"),
            f"{TWISTED_API}/twisted.internet.interfaces.IReactorSSL.html#listenSSL",
        )

    def test_instanceAttribute(self) -> None:
        """
        An attribute that only instances have (assigned in C{__init__}) is
        found in the class's source.
        """
        self.assertEqual(
            installedLink("twisted.python.threadpool.ThreadPool.working"),
            f"{TWISTED_API}/twisted.python.threadpool.ThreadPool.html#working",
        )

    def test_attributeHoldingAClass(self) -> None:
        """
        A class attribute whose value is a class is an anchor on its
        class's page, not a page of its own.
        """
        self.assertEqual(
            installedLink("twisted.python.threadpool.ThreadPool.threadFactory"),
            f"{TWISTED_API}/twisted.python.threadpool.ThreadPool.html#threadFactory",
        )

    def test_builtins(self) -> None:
        self.assertEqual(
            [installedLink(name) for name in ("None", "KeyboardInterrupt", "dict")],
            [
                f"{PYTHON_DOCS}/library/constants.html#None",
                f"{PYTHON_DOCS}/library/exceptions.html#KeyboardInterrupt",
                f"{PYTHON_DOCS}/library/stdtypes.html#dict",
            ],
        )

    def test_standardLibrary(self) -> None:
        self.assertEqual(
            [installedLink("signal"), installedLink("socket.socket")],
            [
                f"{PYTHON_DOCS}/library/signal.html#module-signal",
                f"{PYTHON_DOCS}/library/socket.html#socket.socket",
            ],
        )

    def test_misspeltNames(self) -> None:
        self.assertEqual(
            [
                installedLink(name)
                for name in (
                    "Nonee",
                    "twisted.web.http.HTTPChanel",
                    "twisted.web.http.HTTPChannel.nope",
                    "twisted.internet.interfaces.IReactorSSL.nope",
                    "socket.sockett",
                )
            ],
            [None] * 5,
        )

    def test_otherPackages(self) -> None:
        """
        A name of a package other than Twisted and the standard library is
        not linked, so that the check reports it.
        """
        self.assertIsNone(installedLink("klein.Klein"))


class LinkCheckTests(SynchronousTestCase):
    """
    What C{make check} runs, on a package of a few lines.
    """

    def check(self, modules: dict[str, str]) -> tuple[int, str]:
        """
        Run pydoctor as C{make check} does over a package C{pkg} made of
        C{modules}.

        @return: its exit status and what it printed.
        """
        root = tempfile.mkdtemp(prefix="gracesvc-apidocs-")
        self.addCleanup(shutil.rmtree, root)
        package = os.path.join(root, "pkg")
        os.makedirs(package)
        for name, source in modules.items():
            with open(os.path.join(package, name + ".py"), "w") as f:
                f.write(textwrap.dedent(source))
        out = io.StringIO()
        with redirect_stdout(out):
            status = pydoctor(
                [
                    "--quiet",
                    "--warnings-as-errors",
                    "--docformat=epytext",
                    "--project-name=pkg",
                    "--system-class=docs.apidocs.GraceSystem",
                    "--html-writer=docs.apidocs.LinkCheckWriter",
                    f"--html-output={os.path.join(root, 'out')}",
                    package,
                ]
            )
        return status, out.getvalue()

    def test_linksThatResolve(self) -> None:
        """
        Links to Twisted and Python names, and in a class that a package
        re-exports, to the names its own module imports and to its
        inherited methods, pass.
        """
        status, out = self.check(
            {
                "__init__": '''
                    """
                    L{Site}, re-exported.
                    """
                    from pkg._site import Site

                    __all__ = ["Site"]
                ''',
                "_site": '''
                    """
                    A site.
                    """
                    from twisted.web import server

                    class _Base:
                        def ended(self) -> bool:
                            """
                            Whether it ended: L{None} never.
                            """
                            return False

                    class Site(server.Site, _Base):
                        """
                        A L{server.Site} that has ended when L{ended} says so
                        (L{twisted.web.http.Request.notifyFinish}).
                        """
                ''',
            }
        )
        self.assertEqual((status, out), (0, ""))

    def test_brokenLinkFails(self) -> None:
        status, out = self.check(
            {
                "__init__": '''
                    """
                    L{twisted.web.http.HTTPChanel}.
                    """
                ''',
            }
        )
        self.assertEqual(status, 3)
        self.assertIn('Cannot find link target for "twisted.web.http.HTTPChanel"', out)

    def test_epytextErrorFails(self) -> None:
        status, out = self.check(
            {
                "__init__": '''
                    def f() -> int:
                        """
                        @return: a field before the text, on more than one
                            line.

                        The text.
                        """
                        return 1
                ''',
            }
        )
        self.assertEqual(status, 3)
        self.assertIn("Fields must be the final elements", out)
