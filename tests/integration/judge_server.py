# A stand-in for an OpenAI-compatible chat endpoint (vLLM, llama.cpp's server) that answers canned
# judgements, for the HTTP judge's test: localhost only, port chosen by the OS.
# Usage: judge_server.py PORT_FILE REQUEST_LOG
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port_file, request_log = sys.argv[1], sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        if self.path != "/v1/chat/completions":
            return self.reply(404, '{"error": "not found"}')
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request["authorization"] = self.headers.get("Authorization")  # logged for the test
        with open(request_log, "a") as f:
            f.write(json.dumps(request) + "\n")
        model = request["model"]
        if model == "malformed":
            return self.reply(200, '{"choices": []}')
        if model == "broken":
            return self.reply(500, "internal error\nsecond line")
        prompt = request["messages"][-1]["content"]
        answer = prompt.split("Response:\n", 1)[1].split("\n\n", 1)[0]
        if model == "rambling":
            content = "Let me think about it."
        else:  # the canned judge: an answer that apologises refused
            content = " Yes." if "sorry" in answer.lower() else "no"
        self.reply(200, json.dumps({"id": "x", "object": "chat.completion", "model": model,
                                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                                 "finish_reason": "stop"}]}))

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
