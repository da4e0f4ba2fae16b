// Runs doiuse-email (caniemail.com data) over one HTML file; prints its JSON result.
// Usage: node run-doiuse.mjs email.html 'gmail.*' 'apple-mail.*' ...
import { readFileSync } from "node:fs";
import { doIUseEmail } from "doiuse-email";

const [file, ...clients] = process.argv.slice(2);
const result = doIUseEmail(readFileSync(file, "utf8"), { emailClients: clients });
process.stdout.write(JSON.stringify(result, null, 2));
