from twisted.application.service import ServiceMaker

gracesvc = ServiceMaker(
    "gracesvc",
    "gracesvc.tap",
    "A Klein web service that drains in-flight requests on SIGINT/SIGTERM.",
    "gracesvc",
)
