"""The gateway run's measurements, one module per kind; each is a function of the running
`bench.gateway_run.GatewayRun` that returns its section of the results (the key in brackets).

- concurrency_sweep [runs]: closed loops over client concurrencies, every target: throughput,
  latency and time to first token against LiteLLM, CPU per request by process;
- open_loop [rate, rate_stream]: every target at one fixed rate, 90% of LiteLLM's peak;
- hops [hops]: each hop of the request path alone, at one client;
- memory [memory]: resident memory of each process before and after a long run;
- billing_under_load [billing]: lease-covered requests through the stack and reserve-then-settle
  over NATS, many accounts and one hot account, with settlement figures and the exactly-once check
  per window;
- end_to_end [e2e]: SmolLM2 tokens/s through the stack against Triton directly;
- profiling [profile]: py-spy summaries of each service under load.
"""
