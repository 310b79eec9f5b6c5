"""A real MCP Streamable HTTP client (the Python SDK's) for the proxy tests.

Usage: python client.py URL
Initializes a session, lists tools, calls `lookup` with a progress callback, and prints one JSON
object with what it saw.
"""
import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


async def main(url: str) -> None:
    progress = []

    async def on_progress(value, total, message):
        progress.append([value, total, message])

    async with streamablehttp_client(url) as (read, write, get_session_id):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool("lookup", {"name": "Ada"}, progress_callback=on_progress)
            print(json.dumps({
                "server": init.serverInfo.name,
                "protocol": init.protocolVersion,
                "session_id": get_session_id(),
                "tools": [t.name for t in tools.tools],
                "text": [c.text for c in result.content if c.type == "text"],
                "is_error": result.isError,
                "progress": progress,
            }))


asyncio.run(main(sys.argv[1]))
