"""Calls an LLM API through the proxy with the provider's own Python SDK, the way an application
does, and prints what the application would see, as JSON on stdout.

    python client.py BASE_URL chat|responses|anthropic [stream|whole|tools]

`stream` (the default) reads the answer as it streams: the text the deltas add up to, the SDK's
final object where it has one, and how the answer ended. `whole` makes the same call without
streaming. `tools` streams an answer with reasoning and a tool call (model `tools-test`) and
prints every channel the application reads: the text, the reasoning, the tool call's arguments as
streamed and as the SDK's final object holds them. With SLUICEGATE_NO_KEY=1 the SDK sends no key at all (the proxy injects the provider's);
otherwise it sends SLUICEGATE_API_KEY, or a placeholder that the test upstreams ignore. An error
status from the API (a 429 for a spent budget, say) prints {"status": ..., "retry_after": ...}.
"""

import json
import os
import sys

base_url, api = sys.argv[1], sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else "stream"
messages = [{"role": "user", "content": "Who do I write to?"}]
seen = {}

no_key = os.environ.get("SLUICEGATE_NO_KEY") == "1"
api_key = os.environ.get("SLUICEGATE_API_KEY", "unused")


def refused(error):
    """What an application learns from an API error: its status and when to retry."""
    print(json.dumps({"status": error.status_code, "retry_after": error.response.headers.get("retry-after")}))
    sys.exit(0)


def tools():
    """Every channel of a streamed answer with reasoning and a tool call, as the SDK gives them."""
    if api == "chat":
        import openai

        client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
        text, reasoning, arguments, ended = "", "", "", None
        for chunk in client.chat.completions.create(model="tools-test", messages=messages, stream=True):
            for choice in chunk.choices:
                delta = choice.delta
                text += delta.content or ""
                # Not in the SDK's model: OpenAI-compatible servers' reasoning field.
                reasoning += getattr(delta, "reasoning_content", None) or ""
                for call in delta.tool_calls or []:
                    arguments += call.function.arguments or ""
                ended = choice.finish_reason or ended
        return {"text": text, "reasoning": reasoning, "arguments": arguments, "ended": ended}
    if api == "responses":
        import openai

        client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
        seen = {"text": "", "reasoning": "", "arguments": "", "final_arguments": None, "done_arguments": None}
        for event in client.responses.create(model="tools-test", input="Who do I write to?", stream=True):
            if event.type == "response.output_text.delta":
                seen["text"] += event.delta
            elif event.type == "response.reasoning_summary_text.delta":
                seen["reasoning"] += event.delta
            elif event.type == "response.function_call_arguments.delta":
                seen["arguments"] += event.delta
            elif event.type == "response.function_call_arguments.done":
                seen["done_arguments"] = event.arguments
            elif event.type == "response.completed":
                calls = [item for item in event.response.output if item.type == "function_call"]
                seen["final_arguments"] = calls[0].arguments if calls else None
                seen["ended"] = "completed"
        return seen
    import anthropic

    client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
    seen = {"text": "", "reasoning": "", "arguments": ""}
    with client.messages.stream(model="tools-test", max_tokens=1024, messages=messages) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta":
                    seen["text"] += delta.text
                elif delta.type == "thinking_delta":
                    seen["reasoning"] += delta.thinking
                elif delta.type == "input_json_delta":
                    seen["arguments"] += delta.partial_json
        message = stream.get_final_message()
    seen["final_input"] = next(block.input for block in message.content if block.type == "tool_use")
    seen["final_reasoning"] = next(block.thinking for block in message.content if block.type == "thinking")
    seen["ended"] = message.stop_reason
    return seen


def call():
    global seen
    if mode == "tools":
        seen = tools()
        return
    if api in ("chat", "responses"):
        import openai

        client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
        # The SDK insists on a key unless the header is omitted call by call.
        xh = {"Authorization": openai.Omit()} if no_key else {}
        if api == "chat" and mode == "stream":
            text, finish = "", None
            for chunk in client.chat.completions.create(model="gpt-test", messages=messages, stream=True, extra_headers=xh):
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    finish = choice.finish_reason or finish
            seen = {"deltas": text, "ended": finish}
        elif api == "chat":
            completion = client.chat.completions.create(model="gpt-test", messages=messages, extra_headers=xh)
            seen = {"final": completion.choices[0].message.content, "ended": completion.choices[0].finish_reason}
        elif mode == "stream":
            text, final, ended, done = "", None, None, []
            for event in client.responses.create(model="gpt-test", input="Who do I write to?", stream=True, extra_headers=xh):
                if event.type == "response.output_text.delta":
                    text += event.delta
                elif event.type == "response.output_text.done":
                    done.append(event.text)
                elif event.type == "response.completed":
                    final, ended = event.response.output_text, "completed"
                elif event.type == "response.incomplete":
                    ended = event.response.incomplete_details.reason
            seen = {"deltas": text, "final": final, "done": done, "ended": ended}
        else:
            response = client.responses.create(model="gpt-test", input="Who do I write to?", extra_headers=xh)
            seen = {"final": response.output_text, "ended": response.status}
    elif api == "anthropic":
        import anthropic

        if no_key:
            omitted = {"X-Api-Key": anthropic.Omit(), "Authorization": anthropic.Omit()}
            client = anthropic.Anthropic(base_url=base_url, api_key="", default_headers=omitted, max_retries=0, timeout=30)
        else:
            client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
        if mode == "stream":
            with client.messages.stream(model="claude-test", max_tokens=1024, messages=messages) as stream:
                text = "".join(stream.text_stream)
                message = stream.get_final_message()
            final = "".join(block.text for block in message.content if block.type == "text")
            seen = {"deltas": text, "final": final, "ended": message.stop_reason}
        else:
            message = client.messages.create(model="claude-test", max_tokens=1024, messages=messages)
            seen = {"final": message.content[0].text, "ended": message.stop_reason}
    else:
        sys.exit(f"unknown api {api}")



try:
    call()
except Exception as error:  # the SDKs' APIStatusError, whichever SDK raised it
    if hasattr(error, "status_code") and hasattr(error, "response"):
        refused(error)
    raise

print(json.dumps(seen))
