"""What ``goodput trace --help`` shows, without importing pandas so that it answers fast: the
trace formats' names (``goodput.sim.workload.formats`` checks at import that its readers are exactly
these) and the length-spec grammar (``goodput.sim.workload.lengths`` parses it)."""
FORMAT_NAMES = ("canonical", "azure", "burstgpt", "mooncake", "vidur", "lengths")
SPEC_HELP = ("fixed:N | uniform:LOW:HIGH | lognormal:mean=M,std=S[,min=A,max=B] | "
             "lognormal:median=M,sigma=S[,min=A,max=B] | empirical:PATH[:prompt|output]")
