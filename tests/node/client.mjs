// Drives a running Lexora gateway with the official openai npm package and prints what it saw as JSON.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.LEXORA_BASE_URL, apiKey: process.env.LEXORA_API_KEY, maxRetries: 0 });
const model = process.env.LEXORA_MODEL;
const messages = [{ role: "user", content: "Say hello." }];
const seen = {};

const reply = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
seen.text = reply.choices[0].message.content;
seen.usage = reply.usage;

const stream = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, stream: true });
seen.streamed = "";
seen.chunks = 0;
for await (const chunk of stream) {
  seen.chunks += 1;
  seen.streamed += chunk.choices[0]?.delta?.content ?? "";
  if (chunk.choices[0]?.finish_reason) seen.finish_reason = chunk.choices[0].finish_reason;
}

try {
  await client.chat.completions.create({ model: "no/such-model", messages });
} catch (error) {
  seen.error = { status: error.status, code: error.code, type: error.type };
}
console.log(JSON.stringify(seen));
