/* Optional part of the signup box (/embed): signs the reader up without leaving the article.
   Without it, the form posts and the reader comes back to the article with the answer. */
(function () {
  "use strict";
  function show(box, id) {
    box.querySelectorAll(".nl-answer").forEach(function (answer) {
      answer.classList.toggle("nl-shown", answer.id === id);
    });
  }
  function answerFor(status) {
    if (status === 202) return "nl-thanks";
    if (status === 422) return "nl-invalid";
    return "nl-later";
  }
  document.querySelectorAll(".nl-box form.nl-form").forEach(function (form) {
    var box = form.closest(".nl-box");
    var back = form.elements.namedItem("return_to");
    if (back && !back.value) back.value = location.href.split("#")[0];
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = JSON.stringify({ email: form.elements.namedItem("email").value,
                                  website: form.elements.namedItem("website").value });
      fetch(form.action, { method: "POST", mode: "cors", credentials: "omit",
                           headers: { "Content-Type": "application/json" }, body: body })
        .then(function (response) {
          show(box, answerFor(response.status));
          if (response.status === 202) form.reset();
        })
        .catch(function () { form.submit(); });  // no answer (network, CORS): the plain form still works
    });
  });
})();
