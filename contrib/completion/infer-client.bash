# bash completion for infer-client (installed as
# $(PREFIX)/share/bash-completion/completions/infer-client).
# Model names come from the running daemon: infer-client --json models.

_infer_client_models()
{
	local sock=()
	[ -n "$1" ] && sock=(--socket "$1")
	infer-client "${sock[@]}" --json models 2>/dev/null |
		grep -o '"name":"[^"]*"' | sed 's/^"name":"//; s/"$//'
}

_infer_client()
{
	local cur prev words cword
	_init_completion 2>/dev/null || {
		cur=${COMP_WORDS[COMP_CWORD]}
		prev=${COMP_WORDS[COMP_CWORD-1]}
		words=("${COMP_WORDS[@]}")
		cword=$COMP_CWORD
	}
	local cmds="ping status ps models load unload generate chat tokenize detokenize log metrics shutdown"
	local global="--socket --json -v --verbose --help"
	local gen="-p --prompt --chat --system --chat-template -n --max-tokens --temp
		--top-k --top-p --min-p --repeat-penalty --freq-penalty
		--presence-penalty --repeat-last-n --seed --stop --ignore-eos
		--keep-alive --help"
	local i cmd="" sock="" nargs=0
	for ((i = 1; i < cword; i++)); do
		case ${words[i]} in
		--socket) sock=${words[i+1]}; ((i++)) ;;
		-*) ;;
		*) if [ -z "$cmd" ]; then cmd=${words[i]}; else ((nargs++)); fi ;;
		esac
	done
	case $prev in
	--socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
	--chat-template)
		COMPREPLY=($(compgen -W "chatml llama2 llama3 mistral zephyr gemma phi3" -- "$cur")
			   $(compgen -f -X '!*.jinja' -- "$cur")); return ;;
	-p|--prompt|--system|-n|--max-tokens|--temp|--top-k|--top-p|--min-p|\
	--repeat-penalty|--freq-penalty|--presence-penalty|--repeat-last-n|\
	--seed|--stop|--keep-alive|--limit) return ;;
	esac
	if [ -z "$cmd" ]; then
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "$global" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$cmds" -- "$cur"))
		fi
		return
	fi
	case $cmd in
	generate|chat)
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "$gen" -- "$cur"))
		elif [ $nargs -eq 0 ]; then
			COMPREPLY=($(compgen -W "$(_infer_client_models "$sock")" -- "$cur"))
		fi ;;
	load)
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "--keep-alive --help" -- "$cur"))
		elif [ $nargs -eq 0 ]; then
			COMPREPLY=($(compgen -W "$(_infer_client_models "$sock")" -- "$cur"))
		fi ;;
	unload|tokenize|detokenize)
		[ $nargs -eq 0 ] &&
			COMPREPLY=($(compgen -W "$(_infer_client_models "$sock")" -- "$cur")) ;;
	log)
		COMPREPLY=($(compgen -W "--limit --all --help" -- "$cur")) ;;
	metrics)
		COMPREPLY=($(compgen -W "--prometheus --help" -- "$cur")) ;;
	esac
}
complete -F _infer_client infer-client
