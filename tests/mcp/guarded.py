"""A real MCP Streamable HTTP client (the Python SDK's) that calls tools by name.

Usage: python guarded.py URL TOOL...
Initializes a session, lists tools, calls each TOOL in turn (`lookup` with a name, `count` with a
number, anything else without arguments) and prints one JSON object: the tool names listed, and
for each call its text and structured content, or the JSON-RPC error the SDK raised.
"""
import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

ARGUMENTS = {"lookup": {"name": "Ada"}, "count": {"to": 3}}


async def main(url: str, tools: list[str]) -> None:
    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            calls = {}
            for tool in tools:
                try:
                    result = await session.call_tool(tool, ARGUMENTS.get(tool, {}))
                    calls[tool] = {"text": [c.text for c in result.content if c.type == "text"],
                                   "structured": result.structuredContent,
                                   "is_error": result.isError}
                except McpError as e:
                    calls[tool] = {"error": e.error.message, "code": e.error.code}
            print(json.dumps({"tools": sorted(t.name for t in listed.tools), "calls": calls}))


asyncio.run(main(sys.argv[1], sys.argv[2:]))
