"""A real MCP Streamable HTTP server (the Python SDK's FastMCP) for the proxy tests.

Usage: python server.py PORT [json [MARKER]]
With MCP_TLS_CERT and MCP_TLS_KEY in the environment (PEM files) it serves HTTPS.
Tool `lookup` reports progress twice, logs, and returns text with an e-mail address in it;
`count` counts; `directory` returns a map keyed by e-mail address (structured content); `secret` writes MARKER (a file path) when it is called, so a test can tell that a
refused call never reached the server. With `json` the server answers every POST with one JSON
body (`json_response=True`, stateless), as stateless deployments do, and opens no event stream.
"""
import os
import sys

from mcp.server.fastmcp import Context, FastMCP

port = int(sys.argv[1])
json_mode = len(sys.argv) > 2 and sys.argv[2] == "json"
marker = sys.argv[3] if len(sys.argv) > 3 else None
mcp = FastMCP(
    "sluicegate-test", host="127.0.0.1", port=port, json_response=json_mode, stateless_http=json_mode
)


@mcp.tool()
async def lookup(name: str, ctx: Context) -> str:
    """Looks a person up."""
    await ctx.report_progress(1, 2, "searching")
    await ctx.info(f"looking up {name}")
    await ctx.report_progress(2, 2, "found")
    return f"{name} can be reached at {name.lower()}@example.com"


@mcp.tool()
def count(to: int) -> str:
    """Counts up to a number."""
    return " ".join(str(i) for i in range(1, to + 1))


@mcp.tool()
def directory() -> dict[str, str]:
    """Who is who, keyed by address (a structured result whose keys are data)."""
    return {"ada@example.com": "Ada", "grace@example.com": "Grace"}


@mcp.tool()
def secret() -> str:
    """Something a guarded client must not call."""
    if marker:
        with open(marker, "w") as f:
            f.write("called")
    return "the secret"


if __name__ == "__main__":
    cert, key = os.environ.get("MCP_TLS_CERT"), os.environ.get("MCP_TLS_KEY")
    if cert and key:
        import uvicorn

        app = mcp.streamable_http_app()
        uvicorn.run(app, host="127.0.0.1", port=port, ssl_certfile=cert, ssl_keyfile=key, log_level="warning")
    else:
        mcp.run(transport="streamable-http")
