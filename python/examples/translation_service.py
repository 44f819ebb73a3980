"""CloudTranslationService's request loop, ported from ZeroMQ REQ/REP to
pinwheel (the seed's contract: `{"action": "translate", "text": ...,
"source_lang": ..., "target_lang": ...}` in, `{"status": "success",
"data": {...}}` or `{"status": "error", "message": ...}` out).

What changed from the ZeroMQ version, line by line:

    # ZeroMQ (the seed)                        # pinwheel
    context = zmq.Context()                    agent = pinwheel.Agent()
    socket = context.socket(zmq.REP)           # (no port: the daemon hands
    socket.bind("tcp://*:5592")                #  the rings on fd 3)
    while running:                             for req in agent.requests():
        request = socket.recv_json()               request = req.json()
        response = handle(request)                 response = handle(request)
        socket.send_json(response)                 req.reply(response)

`handle` is unchanged. The loop ends when the daemon stops the agent
(SIGTERM handling and the `running` flag are not needed), a caller reaches
it by name (`agent.call("CloudTranslationService", "translate", {...})`)
instead of `tcp://host:5592`, and the action may travel as the method: a
request whose body has no "action" takes the method's name.
"""

import pinwheel

# A stand-in for the Google/DeepL call of the seed (the port is about the
# request loop; the provider call is unchanged).
GLOSSARY = {("en", "fr"): {"hello": "bonjour", "world": "monde"}}


def translate(text: str, source: str, target: str) -> str:
    words = GLOSSARY.get((source, target), {})
    return " ".join(words.get(word, word) for word in text.split())


def handle(request: dict) -> dict:
    action = request.get("action")
    if action == "translate":
        text = request.get("text", "")
        source = request.get("source_lang", "en")
        target = request.get("target_lang", "fr")
        return {
            "status": "success",
            "data": {
                "translated_text": translate(text, source, target),
                "source_lang": source,
                "target_lang": target,
            },
        }
    if action == "health_check":
        return {"status": "success", "data": {"healthy": True}}
    return {"status": "error", "message": f"unknown action: {action}"}


def main() -> None:
    agent = pinwheel.Agent()
    for req in agent.requests():
        try:
            request = req.json()
        except ValueError as err:
            req.reply({"status": "error", "message": f"invalid JSON: {err}"}, status=400)
            continue
        if isinstance(request, dict):
            request.setdefault("action", req.method)
            req.reply(handle(request))
        else:
            req.reply({"status": "error", "message": "expected a JSON object"}, status=400)


if __name__ == "__main__":
    main()
