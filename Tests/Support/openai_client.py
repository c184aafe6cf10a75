"""Drives Keel's AI gateway with the official `openai` Python package, as an application would.

usage: openai_client.py BASE_URL API_KEY MODEL SCENARIO
  chat       one chat completion: prints {"content", "model", "usage"}
  stream     a streamed chat completion: prints {"content", "chunks", "gaps"} (seconds between chunks)
  embed      embeddings of two inputs: prints {"vectors", "usage"}
  models     prints the model ids the key sees
  error      a chat with MODEL expected to fail: prints {"status", "type", "code", "param", "message"}
"""
import json
import sys
import time

import openai

base_url, api_key, model, scenario = sys.argv[1:5]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]

if scenario == "chat":
    answer = client.chat.completions.create(model=model, messages=messages)
    print(json.dumps({"content": answer.choices[0].message.content, "model": answer.model,
                      "usage": [answer.usage.prompt_tokens, answer.usage.completion_tokens]}))
elif scenario == "stream":
    content, chunks, arrivals = "", 0, []
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
        arrivals.append(time.monotonic())
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            content += chunk.choices[0].delta.content
    print(json.dumps({"content": content, "chunks": chunks, "gaps": [b - a for a, b in zip(arrivals, arrivals[1:])]}))
elif scenario == "embed":
    answer = client.embeddings.create(model=model, input=["one", "two"])
    print(json.dumps({"vectors": [item.embedding for item in answer.data], "usage": answer.usage.prompt_tokens}))
elif scenario == "models":
    print(json.dumps(sorted(item.id for item in client.models.list())))
elif scenario == "error":
    try:
        client.chat.completions.create(model=model, messages=messages)
        print(json.dumps({"status": 200}))
    except openai.APIStatusError as error:
        body = error.body if isinstance(error.body, dict) else {}
        body = body.get("error", body) if isinstance(body.get("error"), dict) else body
        print(json.dumps({"status": error.status_code, "type": body.get("type"), "code": body.get("code"),
                          "param": body.get("param"), "message": body.get("message")}))
