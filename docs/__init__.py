"""
The tools of the documentation: pydoctor's system for the API docs
(L{docs.apidocs}).  The manual is the Markdown beside this file.
"""
