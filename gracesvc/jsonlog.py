"""
JSON logs for twistd: C{twistd --logger gracesvc.jsonlog.observer -n gracesvc}.

Every event, the drain's among them, becomes one JSON object per line on
standard output, with its fields (C{step}, C{inFlight}, C{cut},
C{duration}, ...), for log shippers that want structured data.
"""

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def observer() -> ILogObserver:
    """
    @return: an observer writing one JSON event per line to standard output
        (twistd calls this, with no arguments, for C{--logger}).
    """
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
