/*
 * chat_cli.h - `infer-run chat`: talk to a chat model on the terminal.
 *
 *   infer-run chat MODEL [--system S] [--chat-template NAME] [-p QUESTION]
 *                  [sampling and engine flags as for generate]
 *
 * Without -p it is interactive: one user message per stdin line, the
 * reply streamed to stdout, the conversation kept. Each turn re-renders
 * the whole conversation through the model's chat template; the engine
 * keeps the KV rows of the prefix it shares with the previous turn, so only
 * the new part is prefilled. The oldest exchanges are dropped when the
 * conversation no longer fits the context.
 * With -p it asks one question, prints the answer and exits (the demo).
 */
#ifndef INFERD_CHAT_CLI_H
#define INFERD_CHAT_CLI_H

/* The --help text. */
extern const char chat_cli_usage[];

/* argv[0] is "chat". Returns the exit status: 0 success, 1 runtime error,
 * 2 usage error. */
int chat_cli_main(int argc, char **argv);

#endif
