// Waymark Coffee: a tiny single-page shop. Views are chosen by ?view=...;
// navigation uses history.pushState, so the tag's auto-capture sends a page
// view per view. Add-to-cart buttons carry data-wm-track, so clicks are
// tracked without code; checkout calls the API directly.
(function () {
  var products = [
    { id: "espresso", name: "Espresso beans", price: 12.5, blurb: "Dark, syrupy, for the moka pot." },
    { id: "filter", name: "Filter blend", price: 10, blurb: "Bright and clean, for the V60." },
    { id: "grinder", name: "Hand grinder", price: 65, blurb: "Steel burrs, 40 click settings." }
  ];
  var cart = JSON.parse(sessionStorage.getItem("cart") || "[]");
  var view = document.getElementById("view");

  function byId(id) { return products.filter(function (p) { return p.id === id; })[0]; }
  function money(n) { return "€" + n.toFixed(2); }
  function save() {
    sessionStorage.setItem("cart", JSON.stringify(cart));
    document.getElementById("cart-count").textContent = cart.length;
  }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; }); }

  function render() {
    var q = new URLSearchParams(location.search), v = q.get("view") || "home", p;
    if (v === "product" && (p = byId(q.get("id")))) {
      document.title = p.name + " · Waymark Coffee";
      view.innerHTML = '<article class="product"><h1>' + esc(p.name) + "</h1><p>" + esc(p.blurb) + '</p><p class="price">' +
        money(p.price) + '</p><button type="button" class="add" data-id="' + p.id + '" data-wm-track="Product Added" data-wm-product_id="' +
        p.id + '" data-wm-price="' + p.price + '" data-wm-currency="EUR">Add to cart</button></article>';
    } else if (v === "cart") {
      document.title = "Cart · Waymark Coffee";
      var total = cart.reduce(function (s, id) { return s + byId(id).price; }, 0);
      view.innerHTML = "<h1>Cart</h1>" + (cart.length ? "<ul>" + cart.map(function (id) {
        return "<li>" + esc(byId(id).name) + " — " + money(byId(id).price) + "</li>";
      }).join("") + "</ul>" : "<p>Your cart is empty.</p>") + '<p class="price">Total ' + money(total) + "</p>" +
        '<form id="checkout" name="checkout"><label>Email <input name="email" type="email" required value="ada@example.com"></label>' +
        '<button type="submit"' + (cart.length ? "" : " disabled") + ">Place order</button></form>";
    } else if (v === "done") {
      document.title = "Thank you · Waymark Coffee";
      view.innerHTML = '<h1>Thank you!</h1><p>Order <code id="order-id">' + esc(q.get("order") || "") + "</code> is on its way.</p>" +
        '<p><a href="/" data-nav="home">Back to the shop</a></p>';
    } else {
      document.title = "Waymark Coffee";
      view.innerHTML = '<h1>Fresh coffee, measured kindly</h1><ul class="grid">' + products.map(function (p) {
        return '<li><a href="/?view=product&id=' + p.id + '" data-nav="product">' + esc(p.name) + "</a><span>" + money(p.price) + "</span></li>";
      }).join("") + "</ul>";
    }
  }

  function go(url) { history.pushState(null, "", url); render(); }

  document.addEventListener("click", function (e) {
    var a = e.target.closest("a[data-nav]");
    if (a) { e.preventDefault(); go(a.getAttribute("href")); return; }
    var add = e.target.closest("button.add");
    if (add) { cart.push(add.getAttribute("data-id")); save(); add.textContent = "Added ✓"; }
  });

  document.addEventListener("submit", function (e) {
    if (e.target.id !== "checkout") return;
    e.preventDefault();
    var email = e.target.elements.email.value, order = "o-" + Date.now().toString(36);
    var total = cart.reduce(function (s, id) { return s + byId(id).price; }, 0);
    waymark.identify("user-" + email.split("@")[0], { email: email });
    waymark.track("Order Completed", {
      order_id: order, revenue: total, currency: "EUR",
      products: cart.map(function (id) { return { product_id: id, price: byId(id).price }; })
    });
    cart = []; save();
    go("/?view=done&order=" + order);
  });

  window.addEventListener("popstate", render);

  // Consent banner: the choice goes through waymark.consent.set; the tag
  // remembers it and stamps it on every event (context.consent).
  var banner = document.getElementById("consent");
  function choose(analytics, marketing) {
    waymark.consent.set({ analytics: analytics, marketing: marketing });
    banner.hidden = true;
  }
  document.getElementById("consent-all").onclick = function () { choose(true, true); };
  document.getElementById("consent-analytics").onclick = function () { choose(true, false); };
  document.getElementById("consent-none").onclick = function () { choose(false, false); };
  document.getElementById("privacy").onclick = function () { banner.hidden = false; };
  try { banner.hidden = !!localStorage.getItem("wm_c"); } catch (e) { banner.hidden = false; }

  save();
  render();
})();
