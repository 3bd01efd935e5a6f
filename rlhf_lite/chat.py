"""The chat template every stage formats a prompt with.

InstructGPT's policies read an instruction and write an answer; the course marks the two
turns with plain words the tokenizers know, so one template serves the toy world's word-level
tokenizer and GPT-2's BPE alike:

    user : what is two plus two ? bot : four .

The response follows "bot :" (with a space, see `batching.prompt_response_ids`).
"""

USER, BOT = "user :", "bot :"


def format_prompt(prompt: str) -> str:
    """The text a policy reads before writing its response."""
    return f"{USER} {prompt} {BOT}"
