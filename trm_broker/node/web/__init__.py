"""The node's web app (issue 19): server-rendered pages for case workers, supervisors and
receiving organisations, over the same queries and access rules as the node's JSON API.

:func:`trm_broker.node.web.app.install` puts it on the node's app, under ``/web``. This
package's own module imports nothing, so a command that needs only one of its tables (the
sessions', for the node's migrations) does not load the pages.
"""
