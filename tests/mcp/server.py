"""A real MCP Streamable HTTP server (the Python SDK's FastMCP) for the proxy tests.

Usage: python server.py PORT
Tool `lookup` reports progress twice, logs, and returns text with an e-mail address in it.
"""
import sys

from mcp.server.fastmcp import Context, FastMCP

port = int(sys.argv[1])
mcp = FastMCP("sluicegate-test", host="127.0.0.1", port=port)


@mcp.tool()
async def lookup(name: str, ctx: Context) -> str:
    """Looks a person up."""
    await ctx.report_progress(1, 2, "searching")
    await ctx.info(f"looking up {name}")
    await ctx.report_progress(2, 2, "found")
    return f"{name} can be reached at {name.lower()}@example.com"


if __name__ == "__main__":
    mcp.run(transport="streamable-http")
